//! What a caller hands to the supervisor process it spawns (on its stdin):
//! the whole server configuration, the output mode and whether to start a
//! run or attach to a running one, as escaped `key=value` lines.

use std::path::PathBuf;
use std::time::Duration;

use crate::record::{escape, unescape};
use crate::server::Config;

use super::Supervision;

/// The supervisor's orders.
#[derive(Debug, Clone)]
pub struct Order {
    pub cfg: Config,
    pub redirect_output: bool,
    /// Attach to this running server instead of starting one.
    pub attach: Option<i32>,
    /// The caller hands the held listening socket over as descriptor 3.
    pub socket_fd: bool,
    /// The caller hands its lifeline over as `SUPERVISOR_LIFELINE_FD`:
    /// supervision ends, and the server stops, when the caller does.
    pub lifeline: bool,
}

impl Order {
    pub fn to_text(&self) -> String {
        let c = &self.cfg;
        let path = |p: &std::path::Path| escape(&p.display().to_string());
        let mut t = format!(
            "app_path={}\nhost={}\nport={}\nname={}\nworkers={}\nlog_dir={}\npid_dir={}\nstart_timeout_ms={}\nstop_timeout_ms={}\npython={}\nhold_socket={}\nredirect={}\nsocket_fd={}\nattach={}\n",
            escape(&c.app_path),
            escape(&c.host),
            c.port,
            escape(&c.name),
            c.workers,
            path(&c.log_dir),
            path(&c.pid_dir),
            c.start_timeout.as_millis(),
            c.stop_timeout.as_millis(),
            path(&c.python),
            u8::from(c.hold_socket),
            u8::from(self.redirect_output),
            u8::from(self.socket_fd),
            self.attach.unwrap_or(0),
        );
        if let Some(d) = &c.cwd {
            t.push_str(&format!("cwd={}\n", path(d)));
        }
        for (k, v) in &c.env {
            t.push_str(&format!("env={}={}\n", escape(k), escape(v)));
        }
        for a in &c.uvicorn_args {
            t.push_str(&format!("arg={}\n", escape(a)));
        }
        if c.warm {
            t.push_str("warm=1\n");
        }
        if self.lifeline {
            t.push_str("lifeline=1\n");
        }
        for m in &c.preload {
            t.push_str(&format!("preload={}\n", escape(m)));
        }
        t.push_str(&c.supervision.to_text());
        t
    }

    /// Parses `to_text`; the configuration is validated by `Server::new`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut cfg = Config {
            app_path: String::new(),
            host: String::new(),
            port: 0,
            name: String::new(),
            workers: 1,
            log_dir: PathBuf::new(),
            pid_dir: PathBuf::new(),
            cwd: None,
            env: Vec::new(),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(5),
            uvicorn_args: Vec::new(),
            python: PathBuf::new(),
            hold_socket: false,
            stop_with_caller: false,
            supervision: Supervision::default(),
            warm: false,
            preload: Vec::new(),
            // A supervised server keeps its history and its default PID
            // file (a chosen one is refused with a policy).
            pid_file: None,
            history: false,
        };
        let (mut redirect_output, mut socket_fd, mut attach, mut lifeline) =
            (false, false, None, false);
        for line in text.lines() {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("bad line {line:?}"))?;
            let bad = || format!("bad value for {k}: {v:?}");
            let ms = |v: &str| {
                v.parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| bad())
            };
            match k {
                "app_path" => cfg.app_path = unescape(v),
                "host" => cfg.host = unescape(v),
                "port" => cfg.port = v.parse().map_err(|_| bad())?,
                "name" => cfg.name = unescape(v),
                "workers" => cfg.workers = v.parse().map_err(|_| bad())?,
                "log_dir" => cfg.log_dir = unescape(v).into(),
                "pid_dir" => cfg.pid_dir = unescape(v).into(),
                "cwd" => cfg.cwd = Some(unescape(v).into()),
                "start_timeout_ms" => cfg.start_timeout = ms(v)?,
                "stop_timeout_ms" => cfg.stop_timeout = ms(v)?,
                "python" => cfg.python = unescape(v).into(),
                "hold_socket" => cfg.hold_socket = v == "1",
                "redirect" => redirect_output = v == "1",
                "socket_fd" => socket_fd = v == "1",
                "attach" => attach = v.parse::<i32>().ok().filter(|p| *p > 1),
                "env" => {
                    let (ek, ev) = v.split_once('=').ok_or_else(bad)?;
                    cfg.env.push((unescape(ek), unescape(ev)));
                }
                "arg" => cfg.uvicorn_args.push(unescape(v)),
                "warm" => cfg.warm = v == "1",
                "lifeline" => lifeline = v == "1",
                "preload" => cfg.preload.push(unescape(v)),
                _ => {
                    if cfg.supervision.take(k, v).ok_or_else(bad)? {
                        continue;
                    }
                    return Err(format!("unknown key {k:?}"));
                }
            }
        }
        Ok(Order {
            cfg,
            redirect_output,
            attach,
            socket_fd,
            lifeline,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::Restart;

    #[test]
    fn orders_round_trip() {
        let mut sup = Supervision::default();
        sup.policy.restart = Restart::OnFailure;
        let order = Order {
            cfg: Config {
                app_path: "m:app".into(),
                host: "127.0.0.1".into(),
                port: 8123,
                name: "api".into(),
                workers: 2,
                log_dir: "/tmp/l\nx".into(),
                pid_dir: "/tmp/p".into(),
                cwd: Some("/srv".into()),
                env: vec![("A".into(), "1=2\n".into())],
                start_timeout: Duration::from_millis(1500),
                stop_timeout: Duration::from_secs(2),
                uvicorn_args: vec!["--log-level".into(), "error".into()],
                python: "/usr/bin/python3".into(),
                hold_socket: true,
                stop_with_caller: false,
                supervision: sup,
                warm: true,
                preload: vec!["numpy".into()],
                pid_file: None,
                history: false,
            },
            redirect_output: true,
            attach: Some(4242),
            socket_fd: true,
            lifeline: true,
        };
        let back = Order::parse(&order.to_text()).unwrap();
        assert_eq!(back.to_text(), order.to_text());
        assert_eq!(back.cfg.env, order.cfg.env);
        assert_eq!(back.attach, Some(4242));
        assert!(back.cfg.warm && back.cfg.preload == ["numpy"]);
        assert!(Order::parse("bogus=1").is_err());
    }
}
