//! fake-discord: a faithful fake of Discord's REST API v10 for end-to-end
//! tests, demos and benchmarks of services that call Discord.
//!
//! Why it exists: the service under test must be exercised over real HTTP
//! against something that behaves like Discord (pagination rules, error
//! codes, rate-limit headers and 429s) and that can be made to fail on
//! demand. README.md is the contract; this file only wires the parts:
//!
//! - `cli`: flags → `Config`;
//! - `world`: the immutable bots/guilds/channels/members/messages;
//! - `state`: what write routes changed (messages, deletions, reactions,
//!   nonces, DM channels);
//! - `http`: the blocking HTTP/1.1 server (thread per connection);
//! - `app`: the request pipeline (faults → route → auth → limits → answer);
//! - `api`: Discord routes and JSON bodies (reads);
//! - `writes`, `multipart`: Discord write routes and uploads;
//! - `ratelimit`: per-route buckets and the global limit;
//! - `faults`, `observe`, `control`: the `/_fake/` test API;
//! - `gateway`: the Gateway (WebSocket, optionally over TLS) on two more
//!   listeners, its REST routes and its `/_fake/gateway/` control API.
//!
//! Start-up contract: exactly one line on stdout,
//! `fake-discord listening on http://HOST:PORT`, flushed, once the socket
//! is bound. Errors go to stderr with exit code 2.

mod api;
mod app;
mod cli;
mod control;
mod edge;
mod faults;
mod gateway;
mod http;
mod multipart;
mod observe;
mod ratelimit;
mod state;
mod timefmt;
mod world;
mod writes;

use std::io::Write;
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use app::{App, Options};
use ratelimit::Limits;
use world::World;

fn main() -> ExitCode {
    let start = Instant::now();
    let config = match cli::parse(std::env::args().skip(1)) {
        Ok(cli::Command::Run(config)) => config,
        Ok(cli::Command::Help) => {
            print!("{}", cli::usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("fake-discord: {e}\n\n{}", cli::usage());
            return ExitCode::from(2);
        }
    };
    let world = match &config.world {
        Some(path) => World::load(path),
        None => Ok(World::demo()),
    };
    let world = match world {
        Ok(w) => w,
        Err(e) => {
            eprintln!("fake-discord: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind((config.host.as_str(), config.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "fake-discord: cannot listen on {}:{}: {e}",
                config.host, config.port
            );
            return ExitCode::from(2);
        }
    };
    let port = match listener.local_addr() {
        Ok(addr) => addr.port(),
        Err(e) => {
            eprintln!("fake-discord: {e}");
            return ExitCode::from(2);
        }
    };
    // The Gateway's two listeners: the `url` of GET /gateway(/bot) and the
    // `resume_gateway_url` of READY (see gateway/mod.rs).
    let mut gateway_listeners = Vec::new();
    for _ in 0..2 {
        match TcpListener::bind((config.host.as_str(), 0)).and_then(|l| {
            let port = l.local_addr()?.port();
            Ok((l, port))
        }) {
            Ok(pair) => gateway_listeners.push(pair),
            Err(e) => {
                eprintln!("fake-discord: cannot open a gateway listener: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let options = Options {
        limits: config.ratelimit.then_some(Limits {
            route_limit: config.route_limit,
            route_window: config.route_window,
            global_limit: config.global_limit,
        }),
        latency: config.latency,
        jitter: config.jitter,
        ban_rule: edge::BanRule {
            limit: config.invalid_limit,
            window: config.invalid_window,
            ban: config.ban,
        },
        writes: writes::WriteOptions {
            send_limit: config.send_limit,
            send_window: config.send_window,
            reaction_window: config.reaction_window,
            nonce_window: config.nonce_window,
            max_file_bytes: config.max_file_bytes,
            max_request_bytes: config.max_request_bytes,
        },
    };
    // An IPv6 literal needs brackets in a URL.
    let host = if config.host.contains(':') {
        format!("[{}]", config.host)
    } else {
        config.host.clone()
    };
    let tls = match &config.gateway_tls {
        None => None,
        Some((cert, key)) => match gateway::tls::load(cert, key) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("fake-discord: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let (resume_listener, resume_port) = gateway_listeners.pop().expect("bound above");
    let (gateway_listener, gateway_port) = gateway_listeners.pop().expect("bound above");
    let gateway = gateway::Gateway::new(
        config.gateway,
        format!("{scheme}://{host}:{gateway_port}"),
        format!("{scheme}://{host}:{resume_port}"),
        start,
    );
    let app = Arc::new(App::new(world, options, start, gateway));
    for (listener, via) in [
        (gateway_listener, gateway::Via::Gateway),
        (resume_listener, gateway::Via::Resume),
    ] {
        let app = Arc::clone(&app);
        let tls = tls.clone();
        let spawned = std::thread::Builder::new()
            .name("fake-discord-gateway-accept".into())
            .spawn(move || gateway::conn::serve(listener, app, via, tls));
        if let Err(e) = spawned {
            eprintln!("fake-discord: cannot start the gateway: {e}");
            return ExitCode::from(2);
        }
    }
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "fake-discord listening on http://{host}:{port}");
    let _ = stdout.flush();

    http::serve(listener, app);
    ExitCode::SUCCESS
}
