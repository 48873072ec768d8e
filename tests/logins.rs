//! contract: issue #17, part 3, "One client with one valid token can starve
//! every other bot": logins go through their bot's in-flight gate and share
//! one `GET /users/@me`; one token holds at most `--max-sessions-per-bot`
//! sessions; a client IP logs in at most `--login-rate-limit` times a
//! minute, valid logins included.

mod support;

use std::time::{Duration, Instant};

use support::world::*;
use support::{Fake, Service};

fn users_me_calls(fake: &Fake) -> usize {
    fake.targets()
        .iter()
        .filter(|t| t.ends_with("/users/@me"))
        .count()
}

#[test]
fn a_flood_of_logins_with_one_token_does_not_slow_another_bots_reads() {
    // Discord answers in 100 ms: forty logins checked one after another
    // would hold every worker for seconds.
    let fake = Fake::start_with(&standard(), &["--latency-ms", "100"]);
    let service = Service::start(&fake, &["--workers", "16", "--login-rate-limit", "0"]);
    let other = service.session(MULTI_TOKEN);
    let baseline = {
        let started = Instant::now();
        assert_eq!(service.get("/api/guilds", &other).status, 200);
        started.elapsed()
    };
    let before = users_me_calls(&fake);
    let slowest = std::thread::scope(|scope| {
        let flood: Vec<_> = (0..40)
            .map(|_| scope.spawn(|| service.login(TOKEN).status))
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let mut slowest = Duration::ZERO;
        // Two routes, two reads each: well inside each route's limit of
        // five a second, so no read waits on Discord's rate limits.
        let reads = [
            format!("/api/channels?guildId={GUILD}"),
            format!("/api/messages?channelId={GENERAL}&limit=5"),
        ];
        for path in reads.iter().chain(&reads) {
            let started = Instant::now();
            let reply = service.get(path, &other);
            assert_eq!(reply.status, 200, "{}", reply.text);
            slowest = slowest.max(started.elapsed());
        }
        for login in flood {
            assert_eq!(login.join().unwrap(), 200);
        }
        slowest
    });
    let checks = users_me_calls(&fake) - before;
    assert!(
        checks <= 10,
        "40 logins cost {checks} calls to /users/@me: they were not shared"
    );
    assert!(
        slowest < baseline * 3 + Duration::from_millis(200),
        "another bot's read took {slowest:?} during the flood, {baseline:?} before"
    );
}

#[test]
fn one_token_holds_at_most_max_sessions_per_bot() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &["--max-sessions-per-bot", "3"]);
    let sessions: Vec<String> = (0..3).map(|_| service.session(TOKEN)).collect();
    let refused = service.login(TOKEN);
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(
        refused.error().contains("--max-sessions-per-bot"),
        "{}",
        refused.text
    );
    // Another bot still logs in, and a logout makes room.
    assert_eq!(service.login(MULTI_TOKEN).status, 200);
    assert_eq!(service.logout(&sessions[0]).status, 200);
    assert_eq!(service.login(TOKEN).status, 200);
}

#[test]
fn a_client_ip_logs_in_at_most_login_rate_limit_times_a_minute() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &["--login-rate-limit", "5"]);
    for _ in 0..5 {
        assert_eq!(service.login(TOKEN).status, 200);
    }
    let limited = service.login(TOKEN);
    assert_eq!(limited.status, 429, "{}", limited.text);
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry_after), "Retry-After {retry_after}");
    assert!(
        limited.error().contains("too many logins"),
        "{}",
        limited.text
    );
    assert_eq!(
        users_me_calls(&fake),
        5,
        "the refused login never reached Discord"
    );
}
