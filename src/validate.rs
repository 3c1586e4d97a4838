//! Argument checks, the only ones: every entry point (the Python binding,
//! Rust callers through `Server::new`) goes through them, so bad input fails
//! fast with a message naming the argument, before anything is touched.

use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::spec::key;

/// The most worker processes a server may ask for.
pub const MAX_WORKERS: i64 = 4096;

/// Checks a server name: a plain file-name component.
pub fn name(name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || !ok_chars || name == "." || name == ".." || name.len() > 200 {
        return Err(Error::invalid(
            key::NAME,
            Some(format!("{name:?}")),
            "is not a plain file name: use letters, digits, '.', '_' and '-' (not '.' or '..', at most 200 characters)",
        ));
    }
    Ok(())
}

/// Checks a port number.
pub fn port(port: i64) -> Result<u16> {
    if (1..=65535).contains(&port) {
        Ok(port as u16)
    } else {
        Err(Error::invalid(
            key::PORT,
            Some(port.to_string()),
            "is outside 1..65535",
        ))
    }
}

/// Checks an application path such as `package.module:app`.
pub fn app_path(app: &str) -> Result<()> {
    if app.trim().is_empty() {
        return Err(Error::invalid(key::APP_PATH, None, "must not be empty"));
    }
    if app.contains('\0') || app.starts_with('-') {
        return Err(Error::invalid(
            key::APP_PATH,
            Some(format!("{app:?}")),
            "is not an import path like 'package.module:app'",
        ));
    }
    Ok(())
}

/// Checks the supervision settings (restart policy, health check, memory).
pub fn supervision(s: &crate::supervise::Supervision) -> Result<()> {
    let p = &s.policy;
    seconds_or_zero(key::RESTART_DELAY, p.delay.as_secs_f64())?;
    seconds_or_zero(key::RESTART_MAX_DELAY, p.max_delay.as_secs_f64())?;
    if p.max_delay < p.delay {
        return Err(Error::invalid(
            key::RESTART_MAX_DELAY,
            Some(format!("{}", p.max_delay.as_secs_f64())),
            "is below restart_delay",
        ));
    }
    if p.limit == Some(0) {
        return Err(Error::invalid(
            key::RESTART_LIMIT,
            Some("0".into()),
            "must be at least 1 (or None: never give up)",
        ));
    }
    seconds_or_zero(key::STABLE_AFTER, p.stable_after.as_secs_f64())?;
    if let Some(h) = &s.health {
        if !h.path.starts_with('/') || h.path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(
                key::HEALTH_CHECK,
                Some(format!("{:?}", h.path)),
                "must be a path on the server such as '/healthz' (starting with '/', no spaces)",
            ));
        }
        seconds(key::HEALTH_INTERVAL, h.interval.as_secs_f64())?;
        seconds(key::HEALTH_TIMEOUT, h.timeout.as_secs_f64())?;
        if h.failures == 0 {
            return Err(Error::invalid(
                key::HEALTH_FAILURES,
                Some("0".into()),
                "must be at least 1",
            ));
        }
    }
    if let Some(m) = s.max_memory.filter(|m| *m < 1 << 20) {
        return Err(Error::invalid(
            key::MAX_MEMORY,
            Some(m.to_string()),
            "is under 1 MiB: no Python server fits (give bytes, or a size such as \"512MiB\")",
        ));
    }
    if let Some(b) = s.log_max_bytes.filter(|b| *b != 0 && *b < 1024) {
        return Err(Error::invalid(
            key::LOG_MAX_BYTES,
            Some(b.to_string()),
            "is under 1 KiB (give 0 to never rotate, or a size such as \"50MiB\")",
        ));
    }
    if let Some(n) = s.log_backup_count.filter(|n| *n > 1000) {
        return Err(Error::invalid(
            key::LOG_BACKUP_COUNT,
            Some(n.to_string()),
            "is over 1000 rotated files",
        ));
    }
    // A watcher (`supervise=True` alone) does not replace a server: a
    // health check or a memory limit needs a policy that starts it again.
    if s.policy.restart == crate::supervise::Restart::No
        && (s.health.is_some() || s.max_memory.is_some())
    {
        return Err(Error::invalid(
            if s.health.is_some() { key::HEALTH_CHECK } else { key::MAX_MEMORY },
            None,
            "needs a restart policy (restart=\"on-failure\" or \"always\"): a supervisor acts on it",
        ));
    }
    Ok(())
}

fn seconds_or_zero(arg: &'static str, v: f64) -> Result<()> {
    if v == 0.0 {
        Ok(())
    } else {
        seconds(arg, v).map(|_| ())
    }
}

/// Parses a size in bytes for `arg` (as `memory_size`, 0 allowed).
pub fn size(arg: &'static str, text: &str) -> Result<u64> {
    if text.trim() == "0" {
        return Ok(0);
    }
    memory_size(text).map_err(|_| {
        Error::invalid(
            arg,
            Some(format!("{text:?}")),
            "is not a size such as 65536, \"64KiB\" or \"50MiB\"",
        )
    })
}

/// Parses a memory size: bytes as an integer, or "512MiB", "1GiB", "300MB",
/// "64K" (binary for Ki/Mi/Gi and K/M/G, decimal for kB/MB/GB).
pub fn memory_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "ki" | "kib" => 1024.0,
        "m" | "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        _ => f64::NAN,
    };
    let v = num.parse::<f64>().unwrap_or(f64::NAN) * scale;
    if !v.is_finite() || !(1.0..=1e15).contains(&v) {
        return Err(Error::invalid(
            key::MAX_MEMORY,
            Some(format!("{text:?}")),
            "is not a memory size such as 536870912, \"512MiB\" or \"1GiB\"",
        ));
    }
    Ok(v as u64)
}

/// Whether `app` has uvicorn's `module:attribute` form (dotted names on
/// both sides), e.g. `myapi.main:app`. Checked at `start()`, not in the
/// constructor: the guide builds managers with a placeholder app just to
/// probe ports.
pub fn is_app_target(app: &str) -> bool {
    let dotted = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|part| {
                let mut chars = part.chars();
                chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
                    && chars.all(|c| c.is_alphanumeric() || c == '_')
            })
    };
    matches!(app.split_once(':'), Some((module, attr)) if dotted(module) && dotted(attr))
}

/// Resolves `host` to the addresses a server bound to it would listen on.
pub fn host(host: &str) -> Result<Vec<IpAddr>> {
    let bad = |problem: String| Error::invalid(key::HOST, Some(format!("{host:?}")), problem);
    if host.is_empty() || host.contains('\0') || host.starts_with('-') {
        return Err(bad("is not a host name or address".into()));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let addrs = (bare, 0u16)
        .to_socket_addrs()
        .map_err(|e| bad(format!("does not resolve: {e}")))?;
    let mut out: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(bad("does not resolve".into()));
    }
    Ok(out)
}

/// Checks a worker count.
pub fn workers(workers: i64) -> Result<u32> {
    if (1..=MAX_WORKERS).contains(&workers) {
        Ok(workers as u32)
    } else {
        Err(Error::invalid(
            key::WORKERS,
            None,
            format!("must be between 1 and {MAX_WORKERS}, got {workers}"),
        ))
    }
}

/// `$UPSONIC_WORKERS_AMOUNT` (the original's knob), or 1 when unset or blank.
pub fn workers_from_env() -> Result<u32> {
    match std::env::var("UPSONIC_WORKERS_AMOUNT") {
        Ok(raw) if !raw.trim().is_empty() => match raw.trim().parse::<i64>() {
            Ok(n) => workers(n).map_err(|_| {
                Error::invalid(
                    "UPSONIC_WORKERS_AMOUNT",
                    None,
                    format!("must be between 1 and {MAX_WORKERS}, got {raw:?}"),
                )
            }),
            Err(_) => Err(Error::invalid(
                "UPSONIC_WORKERS_AMOUNT",
                None,
                format!("must be a whole number, got {raw:?}"),
            )),
        },
        _ => Ok(1),
    }
}

/// Checks a timeout given in seconds.
pub fn seconds(arg: &'static str, v: f64) -> Result<Duration> {
    if !v.is_finite() || v <= 0.0 || v > 1e9 {
        return Err(Error::invalid(
            arg,
            None,
            format!("must be a positive number of seconds, got {v}"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Checks one environment entry for the server.
pub fn env_entry(key: &str, value: &str) -> Result<()> {
    if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
        return Err(Error::invalid(
            key::ENV,
            None,
            format!("has an invalid entry {key:?}"),
        ));
    }
    Ok(())
}

/// Checks the module names a warm-start preloader imports (dotted names).
pub fn preload(modules: &[String]) -> Result<()> {
    for m in modules {
        let ok = !m.is_empty()
            && m.split('.').all(|part| {
                let mut chars = part.chars();
                chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
                    && chars.all(|c| c == '_' || c.is_alphanumeric())
            });
        if !ok {
            return Err(Error::invalid(
                key::PRELOAD,
                Some(m.clone()),
                "must be module names like 'numpy' or 'package.module'",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["main", "a.b", "x_y-z", "A1"] {
            assert!(name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a b",
            "é",
            "a\0b",
            &"x".repeat(201),
        ] {
            assert!(name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(port(1).unwrap(), 1);
        assert_eq!(port(65535).unwrap(), 65535);
        assert!(port(0).is_err());
        assert!(port(65536).is_err());
        assert!(port(-1).is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host("0.0.0.0").unwrap(),
            vec!["0.0.0.0".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(host("::").unwrap(), vec!["::".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            host("[::1]").unwrap(),
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
        assert!(host("localhost").unwrap().iter().any(|a| a.is_loopback()));
        assert!(host("no-such-host.invalid").is_err());
        assert!(host("").is_err());
    }

    #[test]
    fn workers_timeouts_env() {
        assert_eq!(workers(1).unwrap(), 1);
        assert!(workers(0).is_err() && workers(4097).is_err());
        assert!(seconds("t", 0.0).is_err() && seconds("t", f64::NAN).is_err());
        assert_eq!(seconds("t", 1.5).unwrap(), Duration::from_millis(1500));
        assert!(env_entry("A", "b").is_ok());
        for (k, v) in [("", "x"), ("A=B", "x"), ("A\0", "x"), ("A", "x\0")] {
            assert!(env_entry(k, v).is_err(), "{k:?}");
        }
        assert!(seconds(key::STOP_TIMEOUT, -1.0)
            .unwrap_err()
            .to_string()
            .starts_with("stop_timeout must be"));
    }

    #[test]
    fn app_paths() {
        assert!(app_path("pkg.mod:app").is_ok());
        assert!(app_path("").is_err());
        assert!(app_path("  ").is_err());
        assert!(app_path("--reload").is_err());
        for good in [
            "m:app",
            "pkg.mod:app",
            "usm_ünicode:äpp",
            "m:factory.attr",
            "_m:_a",
        ] {
            assert!(is_app_target(good), "{good}");
        }
        for bad in [
            "myapi", "m:", ":app", "m::app", "m:a:b", "1m:app", "m.:app", "m:app()", "a b:c",
        ] {
            assert!(!is_app_target(bad), "{bad}");
        }
    }
}
