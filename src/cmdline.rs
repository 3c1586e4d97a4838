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

/// uvicorn's options that change where or how the server listens and that
/// the manager does not manage: given in `uvicorn_args`, each is refused at
/// once (before anything launches), with why. The one list.
pub const REFUSED: &[(&str, &str)] = &[
    (
        "--host",
        "the manager binds and watches the address: give it as host",
    ),
    (
        "--port",
        "the manager binds and watches the port: give it as port",
    ),
    (
        "--workers",
        "the manager counts and watches the workers: give them as workers",
    ),
    (
        "--uds",
        "a unix socket is not managed: the manager serves and watches TCP on host and port",
    ),
    (
        "--fd",
        "the manager hands the listening socket over itself (hold_socket=True)",
    ),
    (
        "--reload",
        "uvicorn's file watcher is not managed: use reload() or restart() (the CLI's reload)",
    ),
    (
        "--reload-dir",
        "uvicorn's file watcher is not managed: use reload() or restart()",
    ),
    (
        "--reload-include",
        "uvicorn's file watcher is not managed: use reload() or restart()",
    ),
    (
        "--reload-exclude",
        "uvicorn's file watcher is not managed: use reload() or restart()",
    ),
    (
        "--reload-delay",
        "uvicorn's file watcher is not managed: use reload() or restart()",
    ),
    (
        "--version",
        "uvicorn would print its version and exit instead of serving",
    ),
    (
        "--help",
        "uvicorn would print its help and exit instead of serving",
    ),
];

/// The environment variables (uvicorn reads `UVICORN_<OPTION>`) that would
/// do what a refused option does. `UVICORN_HOST`/`_PORT` are overridden by
/// the command line the manager gives, so they do no harm.
const REFUSED_ENV: &[&str] = &[
    "UVICORN_WORKERS",
    "UVICORN_UDS",
    "UVICORN_FD",
    "UVICORN_RELOAD",
    "UVICORN_RELOAD_DIR",
    "UVICORN_RELOAD_INCLUDE",
    "UVICORN_RELOAD_EXCLUDE",
    "UVICORN_RELOAD_DELAY",
];

/// How a server started with some uvicorn arguments and environment speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Speaks {
    /// TLS (`--ssl-certfile`/`--ssl-keyfile`, or their `UVICORN_` variables):
    /// `https://`, and a health probe over TLS.
    pub tls: bool,
}

/// An argument the manager refuses: what was given, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// `key::UVICORN_ARGS` or `key::ENV`.
    pub arg: &'static str,
    /// The option or variable as given.
    pub given: String,
    pub why: &'static str,
}

/// Reads how the server will listen from the uvicorn arguments the manager
/// appends to its own command line and the extra environment; refuses any
/// that changes where or how it listens and is not managed (`REFUSED`).
pub fn speaks(uvicorn_args: &[String], env: &[(String, String)]) -> Result<Speaks, Refused> {
    let mut out = Speaks::default();
    let mut rest = uvicorn_args.iter();
    while let Some(a) = rest.next() {
        let Some(opt) = a.strip_prefix("--") else {
            continue;
        };
        let (key, inline) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (opt, None),
        };
        let option = format!("--{key}");
        if let Some((_, why)) = REFUSED.iter().find(|(o, _)| *o == option) {
            return Err(Refused {
                arg: crate::spec::key::UVICORN_ARGS,
                given: option,
                why,
            });
        }
        if inline.is_none() && FLAGS.contains(&a.as_str()) {
            continue;
        }
        let value = inline.or_else(|| rest.next().cloned()).unwrap_or_default();
        if matches!(key, "ssl-certfile" | "ssl-keyfile") && !value.is_empty() {
            out.tls = true;
        }
    }
    for (k, v) in env {
        if REFUSED_ENV.contains(&k.as_str()) {
            let option = format!(
                "--{}",
                k["UVICORN_".len()..].to_ascii_lowercase().replace('_', "-")
            );
            let why = REFUSED
                .iter()
                .find(|(o, _)| *o == option)
                .map_or("it changes how the server listens", |(_, w)| w);
            return Err(Refused {
                arg: crate::spec::key::ENV,
                given: k.clone(),
                why,
            });
        }
        if matches!(k.as_str(), "UVICORN_SSL_CERTFILE" | "UVICORN_SSL_KEYFILE") && !v.is_empty() {
            out.tls = true;
        }
    }
    Ok(out)
}

impl Speaks {
    /// `"https"` or `"http"`.
    pub fn scheme(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

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
    fn how_it_listens_and_what_is_refused() {
        let args = |s: &str| -> Vec<String> { s.split(' ').map(str::to_owned).collect() };
        let none: &[(String, String)] = &[];
        assert_eq!(speaks(&[], none), Ok(Speaks { tls: false }));
        let tls = speaks(
            &args("--log-level error --ssl-keyfile k.pem --ssl-certfile=c.pem --no-access-log"),
            none,
        )
        .unwrap();
        assert!(tls.tls);
        assert_eq!(tls.scheme(), "https");
        // A value is not an option: "--root-path --uds" would be odd, but
        // "--log-level" takes the next word whatever it is.
        assert!(
            !speaks(&args("--root-path /api --proxy-headers"), none)
                .unwrap()
                .tls
        );
        for (given, option) in [
            ("--uds /tmp/s", "--uds"),
            ("--fd=3", "--fd"),
            ("--log-level error --port 9000", "--port"),
            ("--host=0.0.0.0", "--host"),
            ("--workers 4", "--workers"),
            ("--reload", "--reload"),
            ("--reload-dir src", "--reload-dir"),
            ("--version", "--version"),
        ] {
            let r = speaks(&args(given), none).unwrap_err();
            assert_eq!(
                (r.arg, r.given.as_str()),
                (crate::spec::key::UVICORN_ARGS, option),
                "{given}"
            );
            assert!(!r.why.is_empty());
        }
        let env = vec![("UVICORN_SSL_CERTFILE".to_owned(), "c.pem".to_owned())];
        assert!(speaks(&[], &env).unwrap().tls);
        let env = vec![("UVICORN_UDS".to_owned(), "/tmp/s".to_owned())];
        let r = speaks(&[], &env).unwrap_err();
        assert_eq!(
            (r.arg, r.given.as_str()),
            (crate::spec::key::ENV, "UVICORN_UDS")
        );
        assert!(r.why.contains("unix socket"));
        let env = vec![("UVICORN_PORT".to_owned(), "1".to_owned())];
        assert!(speaks(&[], &env).is_ok());
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
