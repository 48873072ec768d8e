//! contract: issue 6, several instances as one service through Redis
//! (`--redis-url`). Each test starts a real `redis-server` (see
//! support/redis.rs; skipped with one loud line where it is not installed),
//! one fake Discord and two instances of the service.

#[path = "support/redis.rs"]
mod redis_server;
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use redis_server::{RedisServer, SESSION_KEY};
use support::world::*;
use support::{DISCORD_LIMITS, Fake, Service};

fn instance(fake: &Fake, redis: &RedisServer, extra: &[&str]) -> Service {
    let flags = redis.flags();
    let mut all: Vec<&str> = flags.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    Service::start(fake, &all)
}

fn guilds(service: &Service, session: &str) -> u16 {
    service.get("/api/guilds", session).status
}

#[test]
fn session_made_on_a_works_on_b_and_logout_on_b_ends_it_on_a_at_once() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let fake = Fake::start(&standard());
    let a = instance(&fake, &redis, &[]);
    let b = instance(&fake, &redis, &[]);
    let session = a.session(TOKEN);
    assert_eq!(guilds(&b, &session), 200);
    let out = b.logout(&session);
    assert_eq!(out.status, 200, "{}", out.text);
    assert_eq!(guilds(&a, &session), 401);
    assert_eq!(guilds(&b, &session), 401);
}

#[test]
fn a_restarted_instance_still_serves_its_sessions() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let fake = Fake::start(&standard());
    let a = instance(&fake, &redis, &[]);
    let session = a.session(TOKEN);
    drop(a);
    let a = instance(&fake, &redis, &[]);
    assert_eq!(guilds(&a, &session), 200);
    let reply = a.get(&format!("/api/channels?guildId={GUILD}"), &session);
    assert_eq!(reply.status, 200, "{}", reply.text);
}

#[test]
fn max_sessions_holds_across_the_cluster() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let fake = Fake::start(&standard());
    let a = instance(&fake, &redis, &["--max-sessions", "2"]);
    let b = instance(&fake, &redis, &["--max-sessions", "2"]);
    a.session(TOKEN);
    b.session(MULTI_TOKEN);
    let third = a.login(TOKEN);
    assert_eq!(third.status, 503, "{}", third.text);
    assert_eq!(b.login(LONELY_TOKEN).status, 503);
}

#[test]
fn idle_sessions_expire_in_redis_and_use_refreshes_them() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let fake = Fake::start(&standard());
    let a = instance(&fake, &redis, &["--session-idle-timeout", "2"]);
    let used = a.session(TOKEN);
    let idle = a.session(TOKEN);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(900));
        assert_eq!(guilds(&a, &used), 200);
    }
    assert_eq!(guilds(&a, &idle), 401, "idle for 2.7 s of a 2 s timeout");
}

#[test]
fn redis_down_answers_503_with_the_reason_at_once_and_recovers_by_itself() {
    let Some(mut redis) = RedisServer::start_or_skip() else {
        return;
    };
    let fake = Fake::start(&standard());
    let a = instance(&fake, &redis, &[]);
    let b = instance(&fake, &redis, &[]);
    let session = a.session(TOKEN);
    assert_eq!(guilds(&b, &session), 200);
    assert!(a.is_healthy());

    redis.stop();
    for service in [&a, &b] {
        let asked = Instant::now();
        let reply = service.get("/api/guilds", &session);
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "took {:?}",
            asked.elapsed()
        );
        assert_eq!(reply.status, 503, "{}", reply.text);
        assert!(
            reply.error().contains("session store is unavailable"),
            "{}",
            reply.text
        );
        assert!(reply.error().contains("Redis"), "{}", reply.text);
        let health = service.request("GET", "/healthz", &[], None);
        assert_eq!(health.status, 503, "{}", health.text);
        assert!(health.text.contains("Redis"), "{}", health.text);
        assert_eq!(service.login(TOKEN).status, 503);
    }

    // Same port, empty Redis (no persistence): the old session is gone,
    // but both instances serve again without a restart.
    redis.start();
    assert!(a.is_healthy() && b.is_healthy());
    let session = b.session(TOKEN);
    assert_eq!(guilds(&a, &session), 200);
    assert_eq!(guilds(&b, &session), 200);
}

#[test]
fn a_request_costs_one_redis_round_trip_for_its_session() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let fake = Fake::start(&standard());
    let a = instance(&fake, &redis, &[]);
    let session = a.session(TOKEN);
    // The first use of a script loads it (EVALSHA, NOSCRIPT, EVALSHA).
    assert_eq!(guilds(&a, &session), 200);
    let mut monitor = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "monitor"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli ships with redis-server");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let stdout = monitor.stdout.take().unwrap();
        let lines = std::sync::Arc::clone(&lines);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                lines.lock().unwrap().push(line);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    const REQUESTS: usize = 5;
    for _ in 0..REQUESTS {
        assert_eq!(guilds(&a, &session), 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = monitor.kill();
    let _ = monitor.wait();
    let _ = reader.join();
    let session_calls = lines
        .lock()
        .unwrap()
        .iter()
        // The scripts' own commands show as `[0 lua]` lines: not counted.
        .filter(|l| l.contains("\"EVAL") && l.contains("\"dbb:session:"))
        .count();
    assert_eq!(session_calls, REQUESTS, "session lookups seen by Redis");
}

#[test]
fn redis_holds_no_token_and_no_session_id_in_clear() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let fake = Fake::start(&standard());
    let a = instance(&fake, &redis, &[]);
    let b = instance(&fake, &redis, &[]);
    let sessions = [a.session(TOKEN), b.session(TOKEN), b.session(MULTI_TOKEN)];
    assert_eq!(guilds(&b, &sessions[0]), 200);
    let dump = redis.dump();
    assert!(dump.len() >= 4, "expected sessions in Redis: {dump:?}");
    let secrets: Vec<&str> = [TOKEN, MULTI_TOKEN]
        .into_iter()
        .chain(sessions.iter().map(String::as_str))
        .collect();
    // Absence means something only once the lines are written.
    assert!(a.wait_for_log("POST /api/auth/login") && b.wait_for_log("GET /api/guilds"));
    for log in [a.logs(), b.logs()] {
        for secret in &secrets {
            assert!(!log.contains(secret), "a log names a secret");
        }
    }
    for (key, values) in &dump {
        for secret in &secrets {
            // Any 12 characters of a secret is too much to show.
            for part in secret.as_bytes().windows(12) {
                let part_text = String::from_utf8_lossy(part);
                assert!(
                    !key.contains(&*part_text),
                    "key {key} holds part of a secret"
                );
                for value in values {
                    assert!(
                        !value.windows(12).any(|w| w == part),
                        "{key} holds part of a secret"
                    );
                }
            }
        }
    }
}

#[test]
fn redis_url_without_a_session_key_is_a_one_line_error_exit_2() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_discord-bot-backend"))
        .args(["--redis-url", "redis://127.0.0.1:1"])
        .env_remove("SESSION_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--session-key"), "{stderr}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_discord-bot-backend"))
        .args([
            "--redis-url",
            "redis://127.0.0.1:1",
            "--session-key",
            &SESSION_KEY[..10],
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

const CHANNELS: u64 = 12;
const GLOBAL_LIMIT: u64 = 50;
const LOAD_TOKEN: &str = "MTA4.cluster-load-bot.Ll_l";
const LOAD_BOT_ID: &str = "910000000000000077";

fn load_channel(n: u64) -> u64 {
    710_000_000_000_007_700 + n
}

/// One bot alone in a guild of 12 channels.
fn load_world() -> Value {
    let channels: Vec<Value> = (0..CHANNELS)
        .map(|n| json!({"id": load_channel(n).to_string(), "name": format!("c{n}"), "message_count": 20}))
        .collect();
    json!({
        "bots": [{"token": LOAD_TOKEN, "id": LOAD_BOT_ID, "username": "LoadBot",
                  "guilds": ["810000000000000077"]}],
        "guilds": [{"id": "810000000000000077", "name": "G", "member_count": 3, "channels": channels}]
    })
}

/// What one run of the two-instance scenario saw at the fake.
struct Run {
    elapsed: Duration,
    /// The most requests of the bot Discord (the fake) saw in any rolling
    /// second; one window is checked at each arrival.
    max_in_a_second: u64,
    arrivals: usize,
    global_429s: usize,
    /// Route 429s by channel.
    route_429s: HashMap<String, usize>,
}

/// Issue #16's scenario: two instances on one Redis and one bot hammered
/// from both (2 × 16 client threads, `reads` reads over 12 channels), the
/// fake enforcing 5 per second per channel and 50 per second per bot, with
/// `fake_flags` added (latency, jitter). With `hog`, busy loops take the
/// machine's cores while it runs.
fn two_instances_hammer_one_bot(reads: usize, fake_flags: &[&str], hog: bool) -> Option<Run> {
    let redis = RedisServer::start_or_skip()?;
    let fake = Fake::start_with(&load_world(), &[DISCORD_LIMITS, fake_flags].concat());
    // All clients share one address: what is measured is the Discord side.
    let flags = ["--client-rate-limit", "0", "--max-ratelimit-wait", "20000"];
    let instances = [
        Arc::new(instance(&fake, &redis, &flags)),
        Arc::new(instance(&fake, &redis, &flags)),
    ];
    let sessions: Vec<String> = instances.iter().map(|s| s.session(LOAD_TOKEN)).collect();
    // The logins' calls age out of the bot's second before the run.
    std::thread::sleep(Duration::from_millis(1100));
    fake.reset();

    const CLIENTS_PER_INSTANCE: usize = 16;
    let stop_hog = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..if hog { 4 } else { 0 })
        .map(|_| {
            let stop = Arc::clone(&stop_hog);
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
        })
        .collect();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..2 * CLIENTS_PER_INSTANCE)
        .map(|client| {
            let which = client / CLIENTS_PER_INSTANCE;
            let service = Arc::clone(&instances[which]);
            let session = sessions[which].clone();
            let next = Arc::clone(&next);
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= reads {
                        return statuses;
                    }
                    let channel = load_channel(n as u64 % CHANNELS);
                    let path = format!("/api/messages?channelId={channel}&limit=5");
                    let reply = service.get(&path, &session);
                    if reply.status != 200 {
                        eprintln!("{path}: {} {}", reply.status, reply.text);
                    }
                    statuses.push(reply.status);
                }
            })
        })
        .collect();
    let statuses: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    stop_hog.store(true, Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }

    let mut route_429s: HashMap<String, usize> = HashMap::new();
    let mut global_429s = 0;
    let requests = fake.requests();
    for request in &requests {
        if request["status"] == 429 {
            if request["scope"] == "global" {
                global_429s += 1;
                continue;
            }
            let target = request["target"].as_str().unwrap_or_default();
            let channel = target.split('/').nth(4).unwrap_or("?").to_string();
            *route_429s.entry(channel).or_insert(0) += 1;
        }
    }
    let stats = fake.stats();
    let run = Run {
        elapsed,
        max_in_a_second: stats["max_in_any_second"][LOAD_BOT_ID]
            .as_u64()
            .unwrap_or(0),
        arrivals: requests.len(),
        global_429s,
        route_429s,
    };
    eprintln!(
        "2 instances × {CLIENTS_PER_INSTANCE} clients, {reads} reads over {CHANNELS} channels \
         {fake_flags:?}{}: {:.3}s ({:.3} of the allowed rate), {} windows checked, at most {} \
         requests in any second, {} global and {} route 429s",
        if hog { " with a CPU hog" } else { "" },
        run.elapsed.as_secs_f64(),
        reads as f64 / GLOBAL_LIMIT as f64 / run.elapsed.as_secs_f64(),
        run.arrivals,
        run.max_in_a_second,
        run.global_429s,
        run.route_429s.values().sum::<usize>()
    );
    assert_eq!(statuses.len(), reads);
    let not_ok = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(not_ok, 0, "{not_ok} answers were not 200");
    Some(run)
}

/// API.md: "Keep under the global 50 requests per second per bot", across
/// instances as on one; at most one 429 per bucket, as on one instance.
fn assert_limits_kept_between_instances(run: &Run) {
    assert!(
        (1..=GLOBAL_LIMIT).contains(&run.max_in_a_second),
        "the bot sent {} in one second",
        run.max_in_a_second
    );
    assert_eq!(run.global_429s, 0, "global 429s");
    assert!(
        run.route_429s.values().all(|n| *n <= 1),
        "429s per channel: {:?}",
        run.route_429s
    );
}

#[test]
fn two_instances_hammering_one_bot_keep_discords_limits_between_them() {
    // Five runs in a row: one run in five used to pass.
    for _ in 0..5 {
        let Some(run) = two_instances_hammer_one_bot(400, &[], false) else {
            return;
        };
        assert_limits_kept_between_instances(&run);
    }
}

#[test]
fn two_instances_keep_the_global_limit_when_requests_take_long_to_reach_discord() {
    // Up to 300 ms between an instance sending and Discord counting: three
    // times the old margin.
    let Some(run) = two_instances_hammer_one_bot(400, &["--jitter-ms", "300"], false) else {
        return;
    };
    assert_limits_kept_between_instances(&run);
}

#[test]
fn two_instances_keep_the_global_limit_on_a_loaded_machine() {
    let Some(run) = two_instances_hammer_one_bot(400, &["--latency-ms", "20"], true) else {
        return;
    };
    assert_limits_kept_between_instances(&run);
    // Throughput: at least 0.85 of the allowed rate (400 reads at 50 a
    // second take 8 s), unless the hog starved the clients themselves.
    assert!(
        run.elapsed < Duration::from_secs_f64(8.0 / 0.85) * 2,
        "{:?}",
        run.elapsed
    );
}

#[test]
fn invalid_requests_are_counted_for_the_whole_outbound_ip_group() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let fake = Fake::start(&standard());
    let threshold = ["--invalid-request-threshold", "2"];
    let a = instance(&fake, &redis, &threshold);
    let b = instance(&fake, &redis, &threshold);
    let elsewhere = instance(
        &fake,
        &redis,
        &[&threshold[..], &["--outbound-ip-group", "second-ip"]].concat(),
    );
    assert_eq!(a.login("MTA5.wrong-one.Qq_q").status, 401);
    assert_eq!(a.login("MTA5.wrong-two.Qq_q").status, 401);
    let refused = b.login(MULTI_TOKEN);
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(
        refused.error().contains("invalid requests"),
        "{}",
        refused.text
    );
    assert_eq!(
        elsewhere.login(MULTI_TOKEN).status,
        200,
        "an instance with its own outbound IP keeps its own count"
    );
}

#[test]
fn a_busy_bots_index_forgets_its_expired_sessions() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let fake = Fake::start(&standard());
    let a = instance(&fake, &redis, &["--session-idle-timeout", "2"]);
    for _ in 0..5 {
        a.session(TOKEN);
    }
    let busy = a.session(TOKEN);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(900));
        assert_eq!(guilds(&a, &busy), 200);
    }
    let mut redis_cli = redis.connection();
    let bot_keys: Vec<String> = redis::cmd("KEYS")
        .arg("dbb:bot:*")
        .query(&mut redis_cli)
        .unwrap();
    assert_eq!(bot_keys.len(), 1);
    let indexed: usize = redis::cmd("ZCARD")
        .arg(&bot_keys[0])
        .query(&mut redis_cli)
        .unwrap();
    assert_eq!(
        indexed, 1,
        "only the busy session is left in the bot's index"
    );
}

#[test]
fn one_token_holds_at_most_max_sessions_per_bot_across_instances() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let fake = Fake::start(&standard());
    let cap = ["--max-sessions-per-bot", "2"];
    let a = instance(&fake, &redis, &cap);
    let b = instance(&fake, &redis, &cap);
    let first = a.session(TOKEN);
    b.session(TOKEN);
    let refused = a.login(TOKEN);
    assert_eq!(refused.status, 503, "{}", refused.text);
    assert!(
        refused.error().contains("--max-sessions-per-bot"),
        "{}",
        refused.text
    );
    assert_eq!(
        b.login(MULTI_TOKEN).status,
        200,
        "other bots are not capped"
    );
    assert_eq!(b.logout(&first).status, 200);
    assert_eq!(a.login(TOKEN).status, 200, "a logout anywhere makes room");
}

/// Issue #16, at the limiter itself: 50 requests are admitted together but
/// take half a second to reach Discord (a slow connect, a busy machine), so
/// Discord counts them half a second late. A 51st request 1.2 s after they
/// were sent would land within one of Discord's seconds of them: the
/// cluster must make it wait until a second after their answers.
#[test]
fn a_request_that_reaches_discord_late_keeps_its_place_in_the_global_second() {
    use discord_bot_backend::discord::bots::{BotRegistry, Token};
    use discord_bot_backend::discord::cluster::{Admission, Answer, ClusterLimiter};
    use discord_bot_backend::discord::ratelimit::{Observed, RouteKey};
    use discord_bot_backend::store::redis::{RedisLimiter, RedisPool};
    use discord_bot_backend::store::seal::SessionKey;

    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let pool = Arc::new(RedisPool::new(&redis.url(), Duration::from_secs(2)).unwrap());
    let limiter = RedisLimiter::new(
        pool,
        SessionKey::parse(SESSION_KEY).unwrap(),
        50,
        Duration::from_secs(5),
    );
    let registry = BotRegistry::new(50, 8);
    let bot = registry.get_or_create(Token::parse("MTA4.late-arrivals.Ll_l").unwrap());
    // Each on a route of its own, so no bucket holds them back.
    let route = |n: u64| RouteKey {
        template: "GET /channels/:channel_id/messages",
        top_level: Some(n),
    };
    let sent = Instant::now();
    let tickets: Vec<_> = (0..50)
        .map(|n| match limiter.admit(&bot, route(n)).unwrap() {
            Admission::Go(ticket) => ticket,
            Admission::Wait(wait) => panic!("request {n} of the first 50 waits {wait:?}"),
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for ticket in &tickets {
        limiter.record(
            ticket,
            Answer::Answered {
                seen: &Observed::default(),
                success: true,
            },
        );
    }
    std::thread::sleep(
        (sent + Duration::from_millis(1200)).saturating_duration_since(Instant::now()),
    );
    match limiter.admit(&bot, route(50)).unwrap() {
        Admission::Wait(wait) => assert!(
            wait >= Duration::from_millis(100),
            "waits only {wait:?}, though the 50 answers came 0.7 s ago"
        ),
        Admission::Go(_) => {
            panic!("a 51st request was sent within one of Discord's seconds of 50 others")
        }
    }
}

#[test]
fn with_redis_a_data_dir_is_not_used_and_the_log_says_so() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let fake = Fake::start(&standard());
    let dir = std::env::temp_dir().join(format!("dbb-redis-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let service = instance(&fake, &redis, &["--data-dir", dir.to_str().unwrap()]);
    let session = service.session(TOKEN);
    assert_eq!(guilds(&service, &session), 200);
    assert!(
        service.wait_for_log("is not used: with --redis-url"),
        "{}",
        service.logs()
    );
    assert!(!dir.exists(), "nothing was made in the data directory");
}

fn send_with_key(service: &Service, session: &str, key: &str) -> support::Reply {
    service.send_message(session, "one of two instances", Some(key))
}

#[test]
fn one_idempotency_key_sent_to_two_instances_at_once_reaches_discord_once() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let fake = Fake::start(&standard());
    let a = instance(&fake, &redis, &[]);
    let b = instance(&fake, &redis, &[]);
    let session = a.session(TOKEN);
    fake.fault(json!({"kind": "latency", "ms": 400, "path_contains": "/messages"}));
    let (on_a, on_b) = std::thread::scope(|scope| {
        let first = scope.spawn(|| send_with_key(&a, &session, "cluster-1").status);
        std::thread::sleep(Duration::from_millis(100));
        let second = scope.spawn(|| send_with_key(&b, &session, "cluster-1").status);
        (first.join().unwrap(), second.join().unwrap())
    });
    assert_eq!((on_a, on_b), (201, 409));
    let replay = send_with_key(&b, &session, "cluster-1");
    assert_eq!(replay.status, 201, "{}", replay.text);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(fake.created_messages(GENERAL).len(), 1);
}

#[test]
fn the_bots_sessions_are_counted_across_instances_before_its_gateway_closes() {
    let Some(redis) = RedisServer::start_or_skip() else {
        return;
    };
    let fake = Fake::start_with(&standard(), &["--gateway-heartbeat-ms", "500"]);
    let a = instance(&fake, &redis, &[]);
    let b = instance(&fake, &redis, &[]);
    let on_a = a.session(TOKEN);
    let on_b = b.session(TOKEN);
    // A stream on a starts the bot's Gateway there.
    let stream = std::net::TcpStream::connect(&a.addr).unwrap();
    let mut writer = stream.try_clone().unwrap();
    std::io::Write::write_all(
        &mut writer,
        format!("GET /api/events HTTP/1.1\r\nHost: t\r\nAuthorization: {on_b}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let opened = |n: u64| fake.gateway_stats()["bots"][BOT_ID]["connections_open"] == n;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !opened(1) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(opened(1));
    // A session of the bot lives on (made on b): a's logout keeps it.
    assert_eq!(a.logout(&on_a).status, 200);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(opened(1), "{}", fake.gateway_stats());
    drop(stream);
    // The bot's last session, wherever it ends, counts as none left.
    assert_eq!(b.logout(&on_b).status, 200);
    let last = a.session(TOKEN);
    assert_eq!(a.logout(&last).status, 200);
    let closed = || {
        fake.gateway_stats()["bots"][BOT_ID]["close_codes_received"]
            .as_array()
            .is_some_and(|codes| codes.contains(&json!(1000)))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !closed() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(closed(), "{}", fake.gateway_stats());
}
