//! Argument checks done once, in the constructor, so that bad input fails
//! fast with a message naming the argument, before anything is touched.

use std::net::{IpAddr, ToSocketAddrs};

use crate::error::{Error, Result};

/// Checks a server name: a plain file-name component.
pub fn name(name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || !ok_chars || name == "." || name == ".." || name.len() > 200 {
        return Err(Error::InvalidArgument(format!(
            "name {name:?} is not a plain file name: use letters, digits, '.', '_' and '-' (not '.' or '..', at most 200 characters)"
        )));
    }
    Ok(())
}

/// Checks a port number.
pub fn port(port: i64) -> Result<u16> {
    if (1..=65535).contains(&port) {
        Ok(port as u16)
    } else {
        Err(Error::InvalidArgument(format!(
            "port {port} is outside 1..65535"
        )))
    }
}

/// Checks an application path such as `package.module:app`.
pub fn app_path(app: &str) -> Result<()> {
    if app.trim().is_empty() {
        return Err(Error::InvalidArgument("app_path must not be empty".into()));
    }
    if app.contains('\0') || app.starts_with('-') {
        return Err(Error::InvalidArgument(format!(
            "app_path {app:?} is not an import path like 'package.module:app'"
        )));
    }
    Ok(())
}

/// Resolves `host` to the addresses a server bound to it would listen on.
pub fn host(host: &str) -> Result<Vec<IpAddr>> {
    if host.is_empty() || host.contains('\0') || host.starts_with('-') {
        return Err(Error::InvalidArgument(format!(
            "host {host:?} is not a host name or address"
        )));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let addrs = (bare, 0u16)
        .to_socket_addrs()
        .map_err(|e| Error::InvalidArgument(format!("host {host:?} does not resolve: {e}")))?;
    let mut out: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "host {host:?} does not resolve"
        )));
    }
    Ok(out)
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
    fn app_paths() {
        assert!(app_path("pkg.mod:app").is_ok());
        assert!(app_path("").is_err());
        assert!(app_path("  ").is_err());
        assert!(app_path("--reload").is_err());
    }
}
