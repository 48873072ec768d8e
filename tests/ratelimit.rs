//! contract: API.md "Talking to Discord" (rate limits) and issue #3's proof:
//! against a fake that really enforces Discord's limits (5 per second per
//! channel, 50 per second per bot), many clients get every answer, Discord
//! almost never answers 429, and the run is close to the fastest the limits
//! allow.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::world::*;
use support::{DISCORD_LIMITS, Fake, Service};

const CHANNELS: u64 = 12;
const ROUTE_LIMIT: u64 = 5;
const GLOBAL_LIMIT: u64 = 50;

fn bot_token(bot: u64) -> String {
    format!("MTA4.load-bot-{bot}.Ll_l")
}

fn guild_id(bot: u64) -> u64 {
    810_000_000_000_000_000 + bot
}

fn channel_id(bot: u64, n: u64) -> u64 {
    710_000_000_000_000_000 + bot * 100 + n
}

/// `bots` bots, each alone in its own guild of 12 channels.
fn load_world(bots: u64) -> Value {
    let bot_list: Vec<Value> = (0..bots)
        .map(|b| {
            json!({"token": bot_token(b), "id": (910_000_000_000_000_000u64 + b).to_string(),
                   "username": format!("LoadBot{b}"), "guilds": [guild_id(b).to_string()]})
        })
        .collect();
    let guilds: Vec<Value> = (0..bots)
        .map(|b| {
            let channels: Vec<Value> = (0..CHANNELS)
                .map(|n| json!({"id": channel_id(b, n).to_string(), "name": format!("c{n}"), "message_count": 20}))
                .collect();
            json!({"id": guild_id(b).to_string(), "name": format!("G{b}"), "member_count": 3, "channels": channels})
        })
        .collect();
    json!({"bots": bot_list, "guilds": guilds})
}

/// The time `per_bot` reads over 12 channels need at the limits' sustained
/// rates (50 per second per bot, 5 per second per channel).
///
/// A stricter floor exists: each limit admits a full burst at t = 0, so 600
/// reads could end after 11 s, not 12. The limiter fills every window of
/// such a run, but the last few reads sometimes spill into one more window
/// (a route's window drifts against the global one), which makes 1.1× that
/// floor a coin toss; see ARCHITECTURE.md, "ratelimit".
fn minimum_time(per_bot: u64) -> Duration {
    let global = per_bot as f64 / GLOBAL_LIMIT as f64;
    let route = per_bot.div_ceil(CHANNELS) as f64 / ROUTE_LIMIT as f64;
    Duration::from_secs_f64(global.max(route))
}

/// Runs `per_bot` message reads for each bot from `clients` threads, taking
/// reads in round-robin order over bots, sessions and channels. Returns
/// (statuses, elapsed).
fn hammer(
    service: &Arc<Service>,
    sessions: &[(u64, String)],
    per_bot: u64,
    clients: usize,
) -> (Vec<u16>, Duration) {
    let bots = sessions.iter().map(|(b, _)| *b).max().unwrap() + 1;
    let jobs: Arc<Vec<(String, String)>> = Arc::new(
        (0..per_bot * bots)
            .map(|n| {
                let bot = n % bots;
                let mine: Vec<&String> = sessions
                    .iter()
                    .filter(|(b, _)| *b == bot)
                    .map(|(_, s)| s)
                    .collect();
                let session = mine[(n / bots) as usize % mine.len()].clone();
                let channel = channel_id(bot, (n / bots) % CHANNELS);
                (
                    session,
                    format!("/api/messages?channelId={channel}&limit=5"),
                )
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (service, jobs, next) = (Arc::clone(service), Arc::clone(&jobs), Arc::clone(&next));
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while let Some((session, path)) = jobs.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let reply = service.get(path, session);
                    if reply.status != 200 {
                        eprintln!("{path}: {} {}", reply.status, reply.text);
                    }
                    statuses.push(reply.status);
                }
                statuses
            })
        })
        .collect();
    let statuses = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    (statuses, started.elapsed())
}

/// Serializes the tests that measure time: each measures the limiter, so
/// none may share the two CPUs of a CI machine with another's 32 or 64
/// client threads (an overlap once made a 2.2 s run take 3 s).
static TIMED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    TIMED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Lets the logins' `/users/@me` calls age out of the bots' global second,
/// so the run starts with the whole limit, as `minimum_time` assumes.
fn settle(fake: &Fake) {
    std::thread::sleep(Duration::from_millis(1100));
    fake.reset();
}

fn start(bots: u64, flags: &[&str]) -> (Fake, Arc<Service>) {
    let fake = Fake::start_with(&load_world(bots), DISCORD_LIMITS);
    // The clients here are one address sending far past the default
    // --client-rate-limit on purpose: what is measured is the Discord side.
    let flags = [&["--client-rate-limit", "0"], flags].concat();
    let service = Arc::new(Service::start(&fake, &flags));
    (fake, service)
}

/// 429s the fake served, per channel.
fn discord_429s_per_channel(fake: &Fake) -> HashMap<String, usize> {
    let mut per_channel = HashMap::new();
    for request in fake.requests() {
        if request["status"] == 429 {
            let target = request["target"].as_str().unwrap_or_default();
            let channel = target.split('/').nth(4).unwrap_or("?").to_string();
            *per_channel.entry(channel).or_insert(0) += 1;
        }
    }
    per_channel
}

fn assert_limits_kept(fake: &Fake, statuses: &[u16], elapsed: Duration, per_bot: u64) {
    let not_ok: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(
        not_ok.is_empty(),
        "{} answers were not 200: {:?}",
        not_ok.len(),
        &not_ok[..not_ok.len().min(10)]
    );
    let per_channel = discord_429s_per_channel(fake);
    assert!(
        per_channel.values().all(|n| *n <= 1),
        "429s per channel: {per_channel:?}"
    );
    let stats = fake.stats();
    for (bot, max) in stats["max_in_any_second"].as_object().unwrap() {
        assert!(
            max.as_u64().unwrap() <= GLOBAL_LIMIT,
            "bot {bot} sent {max} in one second"
        );
    }
    // How close to the limits the service gets is `make bench`'s to
    // measure (issue #3's 1.1 ×, in RESULTS.md); on a busy 2-core machine
    // the wall clock says more about the machine. This only catches a
    // limiter that wastes whole windows.
    let minimum = minimum_time(per_bot);
    assert!(
        elapsed <= minimum.mul_f64(1.5),
        "took {elapsed:?}; the limits allow {minimum:?}; {} upstream 429s; {stats}",
        per_channel.values().sum::<usize>()
    );
    eprintln!(
        "{per_bot} reads per bot in {:.3}s: {:.3} × the sustained-rate minimum; {} upstream 429s",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / minimum.as_secs_f64(),
        per_channel.values().sum::<usize>()
    );
}

#[test]
fn two_sessions_32_clients_600_gets_over_12_channels_all_answered_within_the_limits() {
    let _alone = alone();
    let (fake, service) = start(1, &[]);
    let sessions = vec![
        (0, service.session(&bot_token(0))),
        (0, service.session(&bot_token(0))),
    ];
    settle(&fake);
    let (statuses, elapsed) = hammer(&service, &sessions, 600, 32);
    assert_eq!(statuses.len(), 600);
    assert_limits_kept(&fake, &statuses, elapsed, 600);
}

/// Issue #3's scenario for 10 bots at once: 600 reads each, 32 clients per
/// bot. A shorter run (120 reads each, 2.4 s) measured 3.0 s about one time
/// in four with no 429: a limiter that cannot see future requests spends a
/// second's global budget on the routes whose windows reset first, and a
/// route whose window resets later can need one more window at the end.
/// That one window is a third of a 2.4 s run and a twelfth of this one.
#[test]
fn ten_bots_at_once_each_keep_their_own_limits() {
    let _alone = alone();
    let (fake, service) = start(10, &[]);
    let sessions: Vec<(u64, String)> = (0..10)
        .flat_map(|b| {
            [
                (b, service.session(&bot_token(b))),
                (b, service.session(&bot_token(b))),
            ]
        })
        .collect();
    settle(&fake);
    let (statuses, elapsed) = hammer(&service, &sessions, 600, 320);
    assert_eq!(statuses.len(), 6000);
    assert_limits_kept(&fake, &statuses, elapsed, 600);
}

#[test]
fn one_saturated_bucket_does_not_slow_another_bot() {
    let _alone = alone();
    let (fake, service) = start(2, &[]);
    let hot = service.session(&bot_token(0));
    let other = service.session(&bot_token(1));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..64)
        .map(|_| {
            let (service, hot, stop) = (Arc::clone(&service), hot.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    service.get(
                        &format!("/api/messages?channelId={}&limit=1", channel_id(0, 0)),
                        &hot,
                    );
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let mut slowest = Duration::ZERO;
    for n in 0..20 {
        let started = Instant::now();
        let reply = service.get(
            &format!(
                "/api/messages?channelId={}&limit=1",
                channel_id(1, n % CHANNELS)
            ),
            &other,
        );
        slowest = slowest.max(started.elapsed());
        assert_eq!(reply.status, 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    for thread in flood {
        thread.join().unwrap();
    }
    // Waiting on the hot bot's bucket (5 a second) would cost hundreds of
    // milliseconds; a busy machine costs tens.
    assert!(
        slowest < Duration::from_millis(500),
        "another bot waited {slowest:?}"
    );
    assert!(discord_429s_per_channel(&fake).values().all(|n| *n <= 1));
}

#[test]
fn a_lower_global_rate_limit_is_honoured() {
    let _alone = alone();
    let fake = Fake::start_with(
        &load_world(1),
        &["--global-limit", "10", "--route-limit", "100"],
    );
    let service = Arc::new(Service::start(&fake, &["--global-rate-limit", "10"]));
    let sessions = vec![(0, service.session(&bot_token(0)))];
    fake.reset();
    let (statuses, _) = hammer(&service, &sessions, 40, 8);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = fake.stats();
    assert!(
        stats["max_in_any_second"]
            .as_object()
            .unwrap()
            .values()
            .all(|m| m.as_u64().unwrap() <= 10),
        "{stats}"
    );
}

#[test]
fn a_shared_429_is_waited_out_and_not_counted_as_invalid() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &["--invalid-request-threshold", "1"]);
    let session = service.session(TOKEN);
    fake.fault(json!({"kind": "shared_429", "count": 1, "retry_after": 0.3}));
    let reply = service.get(
        &format!("/api/messages?channelId={GENERAL}&limit=1"),
        &session,
    );
    assert_eq!(reply.status, 200);
    // Below the threshold still: a login with a new token goes through.
    assert_eq!(service.login(MULTI_TOKEN).status, 200);
}

#[test]
fn past_the_invalid_request_threshold_logins_with_new_tokens_get_503() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &["--invalid-request-threshold", "2"]);
    let session = service.session(TOKEN);
    assert_eq!(service.login("MTA5.wrong-one.Aa_a").status, 401);
    assert_eq!(service.login("MTA5.wrong-two.Bb_b").status, 401);
    let before = fake.targets().len();
    let reply = service.login(MULTI_TOKEN);
    assert_eq!(reply.status, 503);
    assert!(reply.error().contains("invalid requests"), "{}", reply.text);
    assert_eq!(
        fake.targets().len(),
        before,
        "the refused login never reached Discord"
    );
    // A token already serving sessions is not "likely invalid".
    assert_eq!(service.login(TOKEN).status, 200);
    assert_eq!(service.get("/api/guilds", &session).status, 200);
}

#[test]
fn failed_logins_are_throttled_per_address_with_retry_after() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    for n in 0..5 {
        assert_eq!(service.login(&format!("MTA5.wrong-{n}.Cc_c")).status, 401);
    }
    let reply = service.login(TOKEN);
    assert_eq!(reply.status, 429);
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(fake.targets().len(), 5);
}

#[test]
fn a_token_discord_rejected_is_not_sent_again_on_the_next_login() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    assert_eq!(service.login("MTA5.wrong.Dd_d").status, 401);
    assert_eq!(service.login("MTA5.wrong.Dd_d").status, 401);
    assert_eq!(fake.targets().len(), 1);
}
