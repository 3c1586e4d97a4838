//! The health probe: one HTTP/1.1 GET on the server's own address, judged
//! by its status line (2xx and 3xx pass). Blocking, bounded by a timeout
//! on connect, write and read; the supervisor runs it between events.
//!
//! A server started with uvicorn's `--ssl-certfile` is probed over TLS
//! (rustls, ring provider). The probe asks whether the server answers
//! HTTP, not who it is: any certificate is accepted (self-signed, another
//! name, expired), while the handshake's signatures are still checked.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{self, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

pub use crate::supervision::HealthCheck;

/// Where to connect for a server bound to `host`: a wildcard address is
/// reached through the loopback of its family.
pub fn target(addr: IpAddr, port: u16) -> SocketAddr {
    let ip = match addr {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    SocketAddr::new(ip, port)
}

/// Accepts the server's certificate, whatever it is: the probe checks that
/// the server answers, not its identity.
#[derive(Debug)]
struct AnswersOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnswersOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The probe's TLS client configuration, built once.
fn tls_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(crypto::ring::default_provider());
            let algorithms = provider.signature_verification_algorithms;
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnswersOnly(algorithms)))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// One probe: Ok with the status code, or why it failed. `tls`: the server
/// speaks HTTPS.
pub fn probe(
    to: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
    tls: bool,
) -> Result<u16, String> {
    let deadline = Instant::now() + timeout;
    let s = TcpStream::connect_timeout(&to, timeout).map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    // Timeouts are the socket's own: set through a second handle while the
    // TLS stream owns the first.
    let control = s.try_clone().map_err(|e| e.to_string())?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: upsonic-server-manager health check\r\nConnection: close\r\n\r\n"
    );
    if tls {
        // The name the server is asked for (SNI): the host, or its address.
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
            .unwrap_or_else(|_| ServerName::IpAddress(to.ip().into()));
        let conn = ClientConnection::new(tls_config()?, name).map_err(|e| format!("TLS: {e}"))?;
        exchange(StreamOwned::new(conn, s), &control, &req, deadline, timeout)
    } else {
        exchange(s, &control, &req, deadline, timeout)
    }
}

/// Sends the request and judges the status line of the answer.
fn exchange(
    mut s: impl Read + Write,
    control: &TcpStream,
    req: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<u16, String> {
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let timed_out = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    let no_answer = || format!("no answer within {:.1} s", timeout.as_secs_f64());
    control
        .set_write_timeout(Some(left()))
        .and_then(|()| control.set_read_timeout(Some(left())))
        .map_err(|e| e.to_string())?;
    s.write_all(req.as_bytes())
        .and_then(|()| s.flush())
        .map_err(|e| {
            if timed_out(&e) {
                no_answer()
            } else {
                format!("send: {e}")
            }
        })?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    // The status line is all we judge by.
    while !buf.contains(&b'\n') {
        control
            .set_read_timeout(Some(left()))
            .map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if timed_out(&e) => return Err(no_answer()),
            Err(e) => return Err(format!("receive: {e}")),
        }
        if buf.len() > 4096 {
            break;
        }
    }
    let line = String::from_utf8_lossy(&buf);
    let code = line
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| "no HTTP status line in the answer".to_owned())?;
    if (200..400).contains(&code) {
        Ok(code)
    } else {
        Err(format!("HTTP {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(answer: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                let mut req = [0u8; 512];
                let n = c.read(&mut req).unwrap_or(0);
                assert!(req[..n].starts_with(b"GET /healthz HTTP/1.1\r\n"));
                if !answer.is_empty() {
                    let _ = c.write_all(answer);
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        addr
    }

    #[test]
    fn judges_by_the_status_line() {
        let t = Duration::from_secs(2);
        let ok = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(probe(ok, "x", "/healthz", t, false), Ok(204));
        let bad = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert_eq!(
            probe(bad, "x", "/healthz", t, false),
            Err("HTTP 503".into())
        );
        let silent = serve_once(b"");
        let e = probe(silent, "x", "/healthz", Duration::from_millis(100), false).unwrap_err();
        assert!(e.contains("no answer"), "{e}");
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(probe(closed, "x", "/healthz", t, false)
            .unwrap_err()
            .starts_with("connect"));
    }

    #[test]
    fn tls_to_a_server_that_does_not_speak_it_fails_with_a_reason() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                let mut hello = [0u8; 512];
                let _ = c.read(&mut hello);
                let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            }
        });
        let e = probe(addr, "localhost", "/", Duration::from_secs(2), true).unwrap_err();
        assert!(e.starts_with("receive") || e.starts_with("send"), "{e}");
        assert!(tls_config().is_ok());
    }

    #[test]
    fn wildcards_are_probed_on_loopback() {
        assert_eq!(
            target("0.0.0.0".parse().unwrap(), 80),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            target("::".parse().unwrap(), 80),
            "[::1]:80".parse().unwrap()
        );
    }
}
