//! Reading a uvicorn command line back: which app, address and worker count
//! a running `python -m uvicorn ...` (or `.../bin/uvicorn ...`) serves. The
//! one parser: recognising our servers, adopting an original's server from
//! its bare PID file, and `from_record` in Python all use it.

/// uvicorn's options that take no value; every other `--option` takes one.
const FLAGS: &[&str] = &[
    "--reload",
    "--use-colors",
    "--no-use-colors",
    "--access-log",
    "--no-access-log",
    "--proxy-headers",
    "--no-proxy-headers",
    "--server-header",
    "--no-server-header",
    "--date-header",
    "--no-date-header",
    "--factory",
    "--version",
    "--help",
];

/// What a uvicorn command line says it serves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Uvicorn {
    /// The `module:attribute` argument, if given.
    pub app: Option<String>,
    /// `--host`, if given (uvicorn's default is 127.0.0.1).
    pub host: Option<String>,
    /// `--port`, if given and a valid port (uvicorn's default is 8000).
    pub port: Option<u16>,
    /// `--workers`, if given.
    pub workers: Option<u32>,
}

/// uvicorn's own default port.
pub const DEFAULT_PORT: u16 = 8000;

impl Uvicorn {
    /// Parses `argv` (interpreter first); `None` unless it runs uvicorn,
    /// as `-m uvicorn` or through a `.../uvicorn` script.
    pub fn parse(argv: &[String]) -> Option<Self> {
        let start = argv.iter().enumerate().position(|(i, a)| {
            (a == "uvicorn" && i > 0 && argv[i - 1] == "-m")
                || (i < 2 && a.rsplit('/').next() == Some("uvicorn"))
        })?;
        let mut out = Uvicorn::default();
        let mut rest = argv[start + 1..].iter();
        while let Some(a) = rest.next() {
            if let Some(opt) = a.strip_prefix("--") {
                let (key, inline) = match opt.split_once('=') {
                    Some((k, v)) => (k, Some(v.to_owned())),
                    None => (opt, None),
                };
                if inline.is_none() && FLAGS.contains(&a.as_str()) {
                    continue;
                }
                let value = match inline {
                    Some(v) => Some(v),
                    None => rest.next().cloned(),
                };
                let Some(value) = value else { break };
                match key {
                    "host" => out.host = Some(value),
                    "port" => out.port = value.parse().ok().filter(|p| *p > 0),
                    "workers" => out.workers = value.parse().ok(),
                    _ => {}
                }
            } else if a.starts_with('-') {
                // A short option (uvicorn has none that take values but -h).
                continue;
            } else if out.app.is_none() {
                out.app = Some(a.clone());
            }
        }
        Some(out)
    }

    /// The port this command line listens on (uvicorn's default if unset).
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_PORT)
    }

    /// Whether it serves `app_path`, on `port` when one is given.
    pub fn serves(&self, app_path: &str, port: Option<u16>) -> bool {
        self.app.as_deref() == Some(app_path) && port.is_none_or(|p| p == self.effective_port())
    }
}

/// Whether `argv` is uvicorn serving `app_path` (on `port`, when given).
pub fn is_uvicorn_for(argv: &[String], app_path: &str, port: Option<u16>) -> bool {
    Uvicorn::parse(argv).is_some_and(|u| u.serves(app_path, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn recognises_uvicorn_command_lines() {
        assert!(is_uvicorn_for(
            &c("/usr/bin/python3 -m uvicorn m:app --host 0.0.0.0 --port 8123"),
            "m:app",
            Some(8123)
        ));
        assert!(is_uvicorn_for(
            &c("/venv/bin/uvicorn m:app --port=8123"),
            "m:app",
            Some(8123)
        ));
        assert!(is_uvicorn_for(
            &c("python -m uvicorn m:app"),
            "m:app",
            Some(8000)
        ));
        assert!(!is_uvicorn_for(
            &c("python -m uvicorn m:app --port 8124"),
            "m:app",
            Some(8123)
        ));
        assert!(!is_uvicorn_for(
            &c("python -m uvicorn other:app --port 8123"),
            "m:app",
            Some(8123)
        ));
        assert!(!is_uvicorn_for(
            &c("python -m http.server 8123"),
            "m:app",
            Some(8123)
        ));
        assert!(!is_uvicorn_for(
            &c("python script.py uvicorn m:app"),
            "m:app",
            None
        ));
    }

    #[test]
    fn options_before_the_app_and_values_that_look_like_apps() {
        let u = Uvicorn::parse(&c(
            "python -m uvicorn --workers 2 --log-level error --no-access-log m:app --host ::1 --port=9000",
        ))
        .unwrap();
        assert_eq!(u.app.as_deref(), Some("m:app"));
        assert_eq!(u.host.as_deref(), Some("::1"));
        assert_eq!(u.port, Some(9000));
        assert_eq!(u.workers, Some(2));
        // The last --port wins, as in uvicorn; a bad one is no port.
        let u = Uvicorn::parse(&c("uvicorn a:b --port 1 --port 2")).unwrap();
        assert_eq!(u.port, Some(2));
        let u = Uvicorn::parse(&c("uvicorn a:b --port x")).unwrap();
        assert_eq!((u.port, u.effective_port()), (None, 8000));
        // A dangling option ends the parse without panicking.
        let u = Uvicorn::parse(&c("python -m uvicorn a:b --host")).unwrap();
        assert_eq!(u.host, None);
        assert!(Uvicorn::parse(&[]).is_none());
    }
}
