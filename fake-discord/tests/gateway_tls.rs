//! The Gateway over TLS (`--gateway-tls-cert`, `--gateway-tls-key`): both
//! listeners speak `wss://`, and the REST side says so, as Discord's does.
//!
//! The certificate in `tests/fixtures` is a test CA's (`gateway-ca.pem`)
//! leaf for 127.0.0.1, ::1 and localhost, made with `openssl` and valid
//! until 2126; its key is for tests only.

mod common;

use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use common::{BOT_A, Fake, TOKEN_A};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn start() -> Fake {
    let world = json!({
        "bots": [{"token": TOKEN_A, "id": BOT_A, "username": "Alpha", "guilds": []}],
        "guilds": []
    });
    let (cert, key) = (fixture("gateway-cert.pem"), fixture("gateway-key.pem"));
    Fake::with_world(
        &world,
        &[
            "--no-ratelimit",
            "--gateway-tls-cert",
            &cert,
            "--gateway-tls-key",
            &key,
        ],
    )
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A WebSocket to `url` (`wss://127.0.0.1:PORT`) trusting the test CA.
fn connect(url: &str) -> WebSocket<Tls> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture("gateway-ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let authority = url.strip_prefix("wss://").unwrap();
    let tcp = TcpStream::connect(authority).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = ClientConnection::new(Arc::new(config), name).unwrap();
    let (ws, _) = tungstenite::client(
        format!("{url}/?v=10&encoding=json"),
        StreamOwned::new(tls, tcp),
    )
    .unwrap();
    ws
}

fn next(ws: &mut WebSocket<Tls>) -> Value {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn with_a_certificate_the_gateway_is_wss_and_speaks_tls() {
    let fake = start();
    let url = fake.a("/gateway/bot").json()["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let mut ws = connect(&url);
    let hello = next(&mut ws);
    assert_eq!(hello["op"], 10, "{hello}");
    let identify = json!({"op": 2, "d": {"token": TOKEN_A, "intents": 1,
        "properties": {"os": "linux", "browser": "test", "device": "test"}}});
    ws.send(Message::text(identify.to_string())).unwrap();
    let ready = next(&mut ws);
    assert_eq!(ready["t"], "READY", "{ready}");
    let resume_url = ready["d"]["resume_gateway_url"].as_str().unwrap();
    assert!(
        resume_url.starts_with("wss://") && resume_url != url,
        "{resume_url}"
    );
    // The resume listener speaks TLS too.
    let mut resumed = connect(resume_url);
    assert_eq!(next(&mut resumed)["op"], 10);
}

#[test]
fn a_certificate_without_its_key_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fake-discord"))
        .args(["--gateway-tls-cert", &fixture("gateway-cert.pem")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let unreadable = std::process::Command::new(env!("CARGO_BIN_EXE_fake-discord"))
        .args([
            "--gateway-tls-cert",
            "/nonexistent.pem",
            "--gateway-tls-key",
            &fixture("gateway-key.pem"),
        ])
        .output()
        .unwrap();
    assert_eq!(unreadable.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unreadable.stderr);
    assert!(
        stderr.contains("--gateway-tls-cert /nonexistent.pem"),
        "{stderr}"
    );
}
