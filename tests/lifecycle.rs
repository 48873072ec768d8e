//! contract: API.md "Running": the listening line, `--help`, one-line errors
//! for bad options, graceful shutdown on SIGINT/SIGTERM.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use discord_bot_backend::config::{OptionDoc, options};
use serde_json::json;
use support::world::*;
use support::{Fake, Service};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_discord-bot-backend"))
}

#[test]
fn start_logs_the_listening_line_with_the_real_port() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let port: u16 = service.addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);
    assert!(
        service
            .logs()
            .contains(&format!("listening on http://127.0.0.1:{port}"))
    );
}

#[test]
fn help_lists_every_option_with_its_environment_variable() {
    let out = binary().arg("--help").output().unwrap();
    assert!(out.status.success());
    // Whitespace collapsed: clap may wrap long lines (its wrap_help
    // feature, enabled by a dev-dependency).
    let help = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let options = options();
    assert!(options.len() > 20, "{options:?}");
    for OptionDoc { flag, env, .. } in options {
        let env = env.unwrap_or_else(|| panic!("{flag} has no environment variable"));
        assert!(help.contains(&flag), "{flag} missing from --help");
        assert!(
            help.contains(&format!("env: {env}")),
            "{env} missing from --help"
        );
    }
}

#[test]
fn a_bad_option_value_exits_non_zero_with_one_line_naming_the_option() {
    for (args, env, named) in [
        (vec!["--port", "abc"], None, "--port"),
        (vec!["--workers", "0"], None, "--workers"),
        (vec!["--log-level", "loud"], None, "--log-level"),
        (
            vec!["--cors-origins", "not an origin"],
            None,
            "--cors-origins",
        ),
        (vec!["--upstream-timeout", "-5"], None, "--upstream-timeout"),
        (vec!["--discord-api", "ftp://x"], None, "--discord-api"),
        (vec![], Some(("PORT", "99999")), "--port"),
        (vec![], Some(("MAX_SESSIONS", "many")), "--max-sessions"),
    ] {
        let mut command = binary();
        command.args(&args);
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let out = command.output().unwrap();
        assert!(!out.status.success(), "{args:?} {env:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

#[test]
fn an_environment_variable_sets_an_option() {
    let fake = Fake::start(&standard());
    let service = Service::start_env(&fake, &[], &[("MAX_SESSIONS", "1")]);
    service.session(TOKEN);
    assert_eq!(service.login(TOKEN).status, 503);
}

#[test]
fn a_flag_wins_over_its_environment_variable() {
    let fake = Fake::start(&standard());
    let service = Service::start_env(&fake, &["--max-sessions", "1"], &[("MAX_SESSIONS", "5")]);
    service.session(TOKEN);
    assert_eq!(service.login(TOKEN).status, 503);
}

#[test]
fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let fake = Fake::start(&standard());
    let mut service = Service::start(&fake, &[]);
    let session = service.session(TOKEN);
    fake.fault(json!({"kind": "latency", "count": 1, "ms": 1500}));
    let url = service.url("/api/guilds");
    let in_flight = std::thread::spawn(move || {
        let mut reply = support::agent()
            .get(&url)
            .header("Authorization", &session)
            .call()
            .unwrap();
        (
            reply.status().as_u16(),
            reply.body_mut().read_to_string().unwrap(),
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    let signalled = Instant::now();
    service.signal("TERM");
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let exit = service
        .wait_exit(Duration::from_secs(10))
        .expect("service exited");
    assert!(exit.success(), "{exit:?}");
    assert!(signalled.elapsed() < Duration::from_secs(5));
}

#[test]
fn sigint_stops_accepting_and_exits_0() {
    let fake = Fake::start(&standard());
    let mut service = Service::start(&fake, &[]);
    service.signal("INT");
    let exit = service
        .wait_exit(Duration::from_secs(5))
        .expect("service exited");
    assert!(exit.success(), "{exit:?}");
    assert!(std::net::TcpStream::connect(&service.addr).is_err());
}
