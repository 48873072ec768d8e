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
//! Invariant: the URL is Discord's (`GET /gateway/bot`, READY's
//! `resume_gateway_url`); nothing here is a client's text.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

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
    Arc::clone(CONFIG.get_or_init(|| {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }))
}

/// Opens TCP to `target` within `timeout` (per address tried), with
/// `TCP_NODELAY` (heartbeats are small and late ones cost the connection),
/// and starts TLS for `wss://`. The TLS handshake itself happens on the
/// first read or write, under the socket's timeouts set here.
pub fn connect(target: &Target, timeout: Duration) -> io::Result<Stream> {
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
}
