//! Optional TLS on the Gateway's listeners (`--gateway-tls-cert`,
//! `--gateway-tls-key`): Discord's Gateway is `wss://`, and a client's
//! memory and CPU per connection are not the same over TLS as over plain
//! TCP, so benchmarks need a Gateway that speaks TLS on loopback.
//!
//! Why rustls with ring: the service under test uses the same crates, so
//! this adds no new code to the workspace's build, and a PEM certificate
//! and key (self-signed, made by the benchmark) are all it needs.
//!
//! Invariant: with TLS off nothing changes: the listeners speak plain
//! `ws://` exactly as before, and `Stream::Plain` is the socket itself.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// The server side of TLS, shared by every connection of both listeners.
pub type Tls = Arc<ServerConfig>;

/// Reads a PEM certificate chain and its private key; the error names the
/// file and what is wrong with it, for the start-up line.
pub fn load(cert: &str, key: &str) -> Result<Tls, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--gateway-tls-cert {cert}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("--gateway-tls-cert {cert}: no certificate in it"));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--gateway-tls-key {key}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("--gateway-tls-cert/--gateway-tls-key: {e}"))?;
    Ok(Arc::new(config))
}

/// A Gateway connection's socket, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Stream {
    /// Wraps an accepted socket; the handshake happens on the first read
    /// (tungstenite's), under the socket's timeouts.
    pub fn accept(tcp: TcpStream, tls: Option<&Tls>) -> io::Result<Stream> {
        match tls {
            None => Ok(Stream::Plain(tcp)),
            Some(config) => {
                let conn = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
                Ok(Stream::Tls(Box::new(StreamOwned::new(conn, tcp))))
            }
        }
    }

    /// The TCP socket, for its timeouts and for shutting it down.
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
