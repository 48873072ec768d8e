//! tls: the socket under a Gateway WebSocket: TCP with a connect timeout,
//! then rustls for `wss://`.
//!
//! Why it exists: `tungstenite::connect` opens TCP with no timeout and its
//! TLS features would bring a second copy of webpki-roots; the REST side's
//! TLS is ureq's own and not reusable as a plain `Read + Write` stream. So
//! we connect ourselves (`TcpStream::connect_timeout` on each address,
//! `TCP_NODELAY`) and wrap the socket in rustls with the same provider
//! (ring) and roots (webpki-roots) ureq uses. `ws://` (the fake Discord on
//! loopback) stays plain TCP.
//!
//! `--gateway-ca-file` adds roots to webpki's, never replaces them: a
//! private deployment's TLS-terminating proxy in front of Discord, or the
//! fake Discord's `wss://` in benchmarks, where the per-connection cost of
//! TLS is what is measured. It is set once at start (`trust`), before the
//! first connection builds the shared `ClientConfig`.
//!
//! Invariant: the URL is Discord's (`GET /gateway/bot`, READY's
//! `resume_gateway_url`); nothing here is a client's text.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Certificates `--gateway-ca-file` adds to the roots the Gateway's TLS
/// trusts. Parsed and checked when the option is read, so a bad file stops
/// the start with the option's name instead of failing every connection.
#[derive(Debug, Clone)]
pub struct ExtraRoots(Vec<CertificateDer<'static>>);

impl ExtraRoots {
    /// Every certificate of a PEM file; at least one, each usable as a
    /// trust anchor.
    pub fn from_file(path: &str) -> Result<ExtraRoots, String> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read PEM certificates from {path}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{path} holds no PEM certificate"));
        }
        let mut check = RootCertStore::empty();
        for cert in &certs {
            check
                .add(cert.clone())
                .map_err(|e| format!("{path}: a certificate is not a usable root: {e}"))?;
        }
        Ok(ExtraRoots(certs))
    }
}

static EXTRA_ROOTS: OnceLock<ExtraRoots> = OnceLock::new();

/// Trusts `roots` beside webpki's for every Gateway connection. Called once
/// at start, before any bot connects: the shared config is built on the
/// first connection and does not change afterwards.
pub fn trust(roots: Option<&ExtraRoots>) {
    if let Some(roots) = roots
        && EXTRA_ROOTS.set(roots.clone()).is_err()
    {
        log::warn!("--gateway-ca-file was given twice; the first one stays");
    }
}

/// A Gateway URL taken apart: enough to connect and to build the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub secure: bool,
    pub host: String,
    pub port: u16,
}

impl Target {
    /// `ws://host[:port][/…]` or `wss://host[:port][/…]`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let (secure, rest) = if let Some(rest) = url.strip_prefix("wss://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("ws://") {
            (false, rest)
        } else {
            return Err("the Gateway URL is not ws:// or wss://".into());
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (
                host,
                port.parse()
                    .map_err(|_| "the Gateway URL has a bad port".to_string())?,
            ),
            _ => (authority, if secure { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err("the Gateway URL has no host".into());
        }
        Ok(Target {
            secure,
            host: host.to_string(),
            port,
        })
    }
}

/// A connected socket, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket, for its timeouts.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// One `ClientConfig` for every connection: building it parses the root
/// store, and rustls shares its session cache through it.
fn config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| Arc::new(client_config(EXTRA_ROOTS.get()))))
}

fn client_config(extra: Option<&ExtraRoots>) -> ClientConfig {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra.map_or(&[][..], |e| &e.0[..]) {
        // Checked by `ExtraRoots::from_file`.
        let _ = roots.add(cert.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// Opens TCP to `target` within `timeout` (per address tried), with
/// `TCP_NODELAY` (heartbeats are small and late ones cost the connection),
/// and starts TLS for `wss://`. The TLS handshake itself happens on the
/// first read or write, under the socket's timeouts set here.
pub fn connect(target: &Target, timeout: Duration) -> io::Result<Stream> {
    connect_with(target, timeout, config)
}

/// `config` is asked for only for `wss://`, so plain `ws://` never builds
/// the root store; tests hand in their own.
fn connect_with(
    target: &Target,
    timeout: Duration,
    config: impl Fn() -> Arc<ClientConfig>,
) -> io::Result<Stream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for the Gateway host");
    for addr in (target.host.as_str(), target.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => {
                tcp.set_nodelay(true)?;
                tcp.set_read_timeout(Some(timeout))?;
                tcp.set_write_timeout(Some(timeout))?;
                if !target.secure {
                    return Ok(Stream::Plain(tcp));
                }
                let name = ServerName::try_from(target.host.clone())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad TLS name"))?;
                let tls = ClientConnection::new(config(), name).map_err(io::Error::other)?;
                return Ok(Stream::Tls(Box::new(StreamOwned::new(tls, tcp))));
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_are_taken_apart() {
        assert_eq!(
            Target::parse("wss://gateway.discord.gg").unwrap(),
            Target {
                secure: true,
                host: "gateway.discord.gg".into(),
                port: 443
            }
        );
        assert_eq!(
            Target::parse("ws://127.0.0.1:4567/?v=10").unwrap(),
            Target {
                secure: false,
                host: "127.0.0.1".into(),
                port: 4567
            }
        );
        assert_eq!(Target::parse("ws://[::1]:9").unwrap().host, "::1");
        assert!(Target::parse("http://x").is_err());
        assert!(Target::parse("ws://:9").is_err());
    }

    #[test]
    fn the_tls_config_builds() {
        let _ = config();
    }

    /// The fake Discord's test CA and its leaf for 127.0.0.1.
    fn fixture(name: &str) -> String {
        format!(
            "{}/fake-discord/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    /// A TLS server on loopback with the fixture's leaf: accepts one
    /// connection, completes the handshake, writes `ok`.
    fn server() -> (u16, std::thread::JoinHandle<()>) {
        use rustls::pki_types::PrivateKeyDer;
        let chain = CertificateDer::pem_file_iter(fixture("gateway-cert.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(fixture("gateway-key.pem")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut tls = StreamOwned::new(conn, tcp);
            // A refused handshake ends here with an error: fine.
            let _ = tls.write_all(b"ok").and_then(|()| tls.flush());
        });
        (port, handle)
    }

    fn handshake(extra: Option<&ExtraRoots>) -> io::Result<Vec<u8>> {
        let (port, server) = server();
        let target = Target::parse(&format!("wss://127.0.0.1:{port}")).unwrap();
        let config = Arc::new(client_config(extra));
        let mut stream = connect_with(&target, Duration::from_secs(5), || Arc::clone(&config))?;
        let mut got = vec![0; 2];
        let read = stream.read_exact(&mut got).map(|()| got);
        drop(stream);
        server.join().unwrap();
        read
    }

    #[test]
    fn an_extra_root_is_trusted_beside_webpkis_and_only_then() {
        let roots = ExtraRoots::from_file(&fixture("gateway-ca.pem")).unwrap();
        assert_eq!(handshake(Some(&roots)).unwrap(), b"ok");
        let refused = handshake(None).unwrap_err();
        assert!(refused.to_string().contains("UnknownIssuer"), "{refused}");
    }

    #[test]
    fn a_ca_file_must_hold_usable_certificates() {
        assert!(ExtraRoots::from_file("/nonexistent/ca.pem").is_err());
        // A key is not a certificate.
        let err = ExtraRoots::from_file(&fixture("gateway-key.pem")).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
