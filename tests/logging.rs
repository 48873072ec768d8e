//! contract: issue #17, "A stalled log reader freezes the whole service":
//! log lines wait for stderr, requests never do. When nobody reads the
//! service's stderr, lines are dropped and counted, and a line says how
//! many once the reader is back.

mod support;

use std::time::{Duration, Instant};

use support::world::*;
use support::{Fake, Service};

/// Answers slower than this count as the service being stuck on its log.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// The counter of dropped log lines, from a scrape.
fn dropped_lines(service: &Service) -> u64 {
    let scrape = service.request("GET", "/metrics", &[], None).text;
    scrape
        .lines()
        .find_map(|l| l.strip_prefix("dbb_log_lines_dropped_total "))
        .expect("dbb_log_lines_dropped_total in the scrape")
        .parse()
        .unwrap()
}

#[test]
fn requests_are_answered_while_nobody_reads_the_log_and_dropped_lines_are_reported() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(ANSWER_WITHIN))
        .build()
        .into();
    service.pause_log_reader(true);
    // Each request logs a line of about 560 bytes: 1,500 of them are three
    // times what the pipe (64 KiB) and the log buffer (256 KiB) hold.
    let padding = "x".repeat(500);
    let started = Instant::now();
    for n in 0..1_500 {
        let reply = agent
            .get(service.url(&format!("/healthz?pad={padding}")))
            .call()
            .unwrap_or_else(|e| panic!("request {n} with the log reader stalled: {e}"));
        assert_eq!(reply.status(), 200, "request {n}");
    }
    let took = started.elapsed();
    let dropped = dropped_lines(&service);
    assert!(dropped > 0, "nothing was dropped, so nothing was tested");
    service.pause_log_reader(false);
    assert!(
        service.wait_for_log("log lines were dropped"),
        "no line reported the {dropped} dropped lines; took {took:?}"
    );
}

#[test]
fn a_request_line_is_logged_whole_after_the_reader_recovers() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    service.pause_log_reader(true);
    let padding = "y".repeat(500);
    for _ in 0..1_500 {
        service.request("GET", &format!("/healthz?pad={padding}"), &[], None);
    }
    service.pause_log_reader(false);
    assert!(service.wait_for_log("log lines were dropped"));
    assert_eq!(
        service
            .request("GET", "/healthz?after=recovery", &[], None)
            .status,
        200
    );
    assert!(service.wait_for_log("GET /healthz?after=recovery 200"));
    // Every line that was written is whole: it starts with a timestamp.
    for line in service.logs().lines() {
        assert!(
            line.starts_with("20") || line.contains("listening on"),
            "a torn line: {:.80}",
            line
        );
    }
}
