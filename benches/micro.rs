//! Micro-benchmarks of the service's hot paths, each in isolation and with no
//! network: `cargo bench --bench micro` (`make bench-micro`). The end-to-end
//! table is `make bench`; both are in benches/RESULTS.md.
//!
//! - `sessions`: `MemoryStore::get` of a live session, from 1 to 8 threads at
//!   once: the read lock every authenticated request takes.
//! - `ratelimit`: what each Discord call does in its bot's limiter: take a
//!   slot (`acquire`), then read the answer's rate-limit headers and hand the
//!   slot back (`Observed::from_headers`, `complete`).
//! - `front`: `Api::handle` for requests answered without Discord (health
//!   check, unknown session, unknown route): routing, authentication, CORS
//!   and the log line's bookkeeping, all the CPU a request costs before
//!   Discord. No logger is installed, so no log line is formatted or written.
//! - `query`: `Query::parse` of typical query strings.
//! - `catalog_find`: `catalog::find`, the passthrough's match of a raw Discord path
//!   against the whole generated route table (237 operations): hits from
//!   the first and deepest templates of a busy first segment, an emoji
//!   route that decodes and parses its emoji, a 405 and a miss.
//! - `idempotency`: a replay, `MemoryIdempotency::claim` of a key answered
//!   before (among 100,000) with a ~1 KB message kept, beside what the
//!   issue bounds it by: a session lookup plus one copy of that answer.

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use divan::Bencher;

use discord_bot_backend::api::Api;
use discord_bot_backend::api::query::Query;
use discord_bot_backend::discord::Discord;
use discord_bot_backend::discord::bots::{Bot, BotRegistry, Token};
use discord_bot_backend::discord::catalog;
use discord_bot_backend::discord::guard::{InvalidRequests, LoginThrottle};
use discord_bot_backend::discord::ratelimit::{BotLimiter, Clock, Observed, RouteKey, SystemClock};
use discord_bot_backend::http::clients::{ClientLimiter, TrustedProxies};
use discord_bot_backend::http::cors::{Cors, CorsOrigins};
use discord_bot_backend::http::server::{Handler, Request};
use discord_bot_backend::store::tickets::MemoryTickets;
use discord_bot_backend::store::{MemoryStore, SessionId, SessionStore, StoreError};

fn main() {
    divan::main();
}

/// Sessions and bots as on a busy instance: `--max-sessions` (10,000)
/// sessions over 1,000 bots.
const SESSIONS: usize = 10_000;
const BOTS: usize = 1_000;

mod sessions {
    use super::*;

    struct Fixture {
        store: MemoryStore,
        ids: Vec<SessionId>,
        // Keeps the bots' registry entries alive for the run.
        _bots: BotRegistry,
    }

    /// Whether the lookup found the session, dropping the `Arc<Bot>` as a
    /// request does when it ends.
    fn found(lookup: Result<Option<Arc<Bot>>, StoreError>) -> bool {
        matches!(lookup, Ok(Some(_)))
    }

    /// One session in a store of `SESSIONS`, for `idempotency`'s bound.
    pub(super) static FIXTURE_FOR_IDEMPOTENCY: LazyLock<(&'static MemoryStore, SessionId)> =
        LazyLock::new(|| (&FIXTURE.store, FIXTURE.ids[0].clone()));

    static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
        let bots = BotRegistry::new(50, 128);
        let store = MemoryStore::new(SESSIONS, u32::MAX, Duration::from_secs(86_400));
        let ids = (0..SESSIONS)
            .map(|i| {
                let token = Token::parse(&format!("bench-token-{}", i % BOTS)).unwrap();
                store.create(bots.get_or_create(token)).unwrap()
            })
            .collect();
        Fixture {
            store,
            ids,
            _bots: bots,
        }
    });

    /// Every thread looks up the same session: one hot client, so the
    /// session's last-use time and its bot's reference count are shared too.
    #[divan::bench(threads = [1, 2, 4, 8])]
    fn get_same_session(bencher: Bencher) {
        let fixture = &*FIXTURE;
        let id = &fixture.ids[0];
        bencher.bench(|| found(fixture.store.get(black_box(id))));
    }

    /// Each lookup is of another session (each thread strides through all
    /// 10,000 from its own start): many clients, sharing only the store's
    /// lock.
    #[divan::bench(threads = [1, 2, 4, 8])]
    fn get_many_sessions(bencher: Bencher) {
        static START: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static NEXT: Cell<usize> = Cell::new(START.fetch_add(1_250, Ordering::Relaxed) % SESSIONS);
        }
        let fixture = &*FIXTURE;
        bencher.bench(|| {
            let i = NEXT.with(|next| {
                let i = next.get();
                next.set((i + 7_919) % SESSIONS);
                i
            });
            found(fixture.store.get(black_box(&fixture.ids[i])))
        });
    }
}

mod ratelimit {
    use super::*;

    /// The real clock, run fast: each reading is `STEP` later than the last.
    /// A bot's global log keeps every request of the last second; on the bare
    /// clock, millions of benchmark requests a second would fill it far past
    /// the 50 a real bot may send (`--global-rate-limit`), and the benchmark
    /// would measure that instead. At two readings of 25 ms per request the
    /// log holds about 20 entries, like a bot sending 20 requests a second.
    struct FastClock {
        readings: AtomicU64,
    }

    const STEP: Duration = Duration::from_millis(25);

    impl Clock for FastClock {
        fn now(&self) -> Instant {
            let n = self.readings.fetch_add(1, Ordering::Relaxed);
            SystemClock.now() + STEP * n as u32
        }
    }

    /// Discord's answer headers for a bucket whose limit never runs out
    /// within a run (4 billion a minute), so no request waits.
    const HEADERS: &[(&str, &str)] = &[
        ("x-ratelimit-bucket", "abcd1234abcd1234abcd1234abcd1234"),
        ("x-ratelimit-limit", "4000000000"),
        ("x-ratelimit-remaining", "3999999999"),
        ("x-ratelimit-reset-after", "60.000"),
        ("x-ratelimit-scope", "user"),
    ];

    fn header(name: &str) -> Option<&'static str> {
        HEADERS
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    const ROUTE: RouteKey = RouteKey {
        template: "GET /channels/:channel_id/messages",
        top_level: Some(1_234_567_890_123_456_789),
    };

    /// One bot's limiter, its messages bucket already known from a first
    /// answer; every thread sends on it, as workers serving one bot do.
    #[divan::bench(threads = [1, 2, 4])]
    fn acquire_then_complete(bencher: Bencher) {
        let clock = FastClock {
            readings: AtomicU64::new(0),
        };
        let limiter = BotLimiter::new(50);
        let far = clock.now() + Duration::from_secs(365 * 86_400);
        let probe = limiter.acquire(ROUTE, &clock, far).unwrap();
        limiter.complete(probe, &Observed::from_headers(header), clock.now());
        bencher.bench(|| {
            let slot = limiter.acquire(black_box(ROUTE), &clock, far).unwrap();
            let seen = Observed::from_headers(header);
            limiter.complete(slot, &seen, clock.now());
        });
    }
}

mod front {
    use super::*;

    /// The service as `main` wires it, with a Discord it never calls and
    /// the per-client limit off (the benchmark is one client sending
    /// millions of requests).
    static API: LazyLock<Api> = LazyLock::new(|| {
        let invalid = Arc::new(InvalidRequests::new(8000));
        Api {
            store: Arc::new(MemoryStore::new(
                SESSIONS,
                u32::MAX,
                Duration::from_secs(86_400),
            )),
            bots: Arc::new(BotRegistry::new(50, 128)),
            discord: Arc::new(Discord::new(
                "http://127.0.0.1:9",
                Duration::from_secs(10),
                256,
                Arc::new(SystemClock),
                Arc::clone(&invalid),
                Duration::from_secs(30),
            )),
            cors: Cors::new(CorsOrigins::Any),
            max_wait: Duration::from_secs(10),
            invalid,
            logins: LoginThrottle::default(),
            login_rate: ClientLimiter::per_minute(0),
            clients: ClientLimiter::new(0, 1),
            proxies: TrustedProxies::default(),
            tickets: std::sync::Arc::new(MemoryTickets::default()),
            events: Arc::new(discord_bot_backend::events::Events::new(
                Box::new(|_, _, _| unreachable!("the front benchmark opens no event stream")),
                discord_bot_backend::events::IDLE_CLOSE,
            )),
            discord_routes: discord_bot_backend::api::passthrough::RouteGroups::parse("read")
                .unwrap(),
            writes: discord_bot_backend::api::writes::WriteSettings::new(
                Arc::new(discord_bot_backend::store::idempotency::MemoryIdempotency::default()),
                None,
                discord_bot_backend::api::writes::DefaultMentions::Users,
                Duration::from_secs(30),
            ),
        }
    });

    fn handle(bencher: Bencher, request: Request) {
        let api = &*API;
        bencher.bench(|| api.handle(black_box(&request), None).status);
    }

    #[divan::bench]
    fn healthz(bencher: Bencher) {
        handle(bencher, Request::for_test("GET", "/healthz", &[], b""));
    }

    /// Routed, then refused at the session check: 401.
    #[divan::bench]
    fn unknown_session(bencher: Bencher) {
        let request = Request::for_test(
            "GET",
            "/api/messages?channelId=1234567890123456789&limit=100",
            &[
                ("Authorization", "Bearer V1StGXR8_Z5jdHi6B-myT"),
                ("Origin", "https://dash.example.com"),
            ],
            b"",
        );
        handle(bencher, request);
    }

    /// Refused by the router: 404.
    #[divan::bench]
    fn unknown_route(bencher: Bencher) {
        handle(bencher, Request::for_test("GET", "/api/nope", &[], b""));
    }
}

mod query {
    use super::*;

    #[divan::bench(args = [
        "channelId=1234567890123456789&limit=100",
        "channelId=1234567890123456789&limit=300&before=1234567890123456700",
        "guildId=1234567890123456789&limit=2500&after=%31%32%33",
    ])]
    fn parse(query: &str) -> bool {
        Query::parse(black_box(query)).is_ok()
    }
}

mod catalog_find {
    use super::*;

    /// `METHOD path` as the passthrough sees them after `/api/discord/v10`.
    /// The `guilds` run is the longest in the table (91 operations), and
    /// scheduled-event users is among its last 6-segment templates.
    const MIX: &[&str] = &[
        "POST /channels/1234567890123456789/messages",
        "GET /channels/1234567890123456789/messages",
        "PUT /channels/1234567890123456789/messages/1234567890123456790/reactions/%F0%9F%91%8D/@me",
        "PUT /guilds/1234567890123456789/members/1234567890123456790/roles/1234567890123456791",
        "GET /guilds/1234567890123456789/scheduled-events/1234567890123456790/users",
        "POST /guilds/1234567890123456789/members/1234567890123456790",
        "GET /guilds/1234567890123456789/nope/1234567890123456790",
    ];

    fn find(request: &str) -> bool {
        let (method, path) = request.split_once(' ').unwrap();
        catalog::find(black_box(method), black_box(path)).is_ok()
    }

    #[divan::bench(args = MIX)]
    fn one(request: &str) -> bool {
        find(request)
    }

    /// The whole mix per iteration: divide by its length for a mean.
    #[divan::bench]
    fn mix() -> usize {
        MIX.iter().filter(|r| find(r)).count()
    }
}

mod idempotency {
    use super::*;
    use discord_bot_backend::store::idempotency::{
        Answer, Claimed, Finished, IdempotencyStore, KeyScope, MemoryIdempotency,
    };

    const KEYS: usize = 100_000;
    /// About what Discord answers a message send with.
    const ANSWER_BYTES: usize = 1_000;
    const LEASE: Duration = Duration::from_secs(30);

    static STORE: LazyLock<MemoryIdempotency> = LazyLock::new(|| {
        let store = MemoryIdempotency::default();
        for n in 0..KEYS {
            let key = format!("bench-key-{n}");
            let scope = KeyScope { bot: 1, key: &key };
            store.claim(scope, &[7; 16], "nonce", LEASE).unwrap();
            let answer = Answer {
                status: 201,
                body: vec![b'x'; ANSWER_BYTES],
            };
            store.finish(scope, Finished::Answered(answer)).unwrap();
        }
        store
    });

    #[divan::bench]
    fn replay(bencher: Bencher) {
        let store = &*STORE;
        bencher.bench(|| {
            let scope = KeyScope {
                bot: 1,
                key: black_box("bench-key-4242"),
            };
            matches!(
                store.claim(scope, &[7; 16], "nonce", LEASE),
                Ok(Claimed::Replay(_))
            )
        });
    }

    /// The bound: a session lookup and one copy of the kept answer.
    #[divan::bench]
    fn session_lookup_and_one_copy(bencher: Bencher) {
        let sessions = &*super::sessions::FIXTURE_FOR_IDEMPOTENCY;
        let answer = vec![b'x'; ANSWER_BYTES];
        bencher.bench(|| {
            let found = sessions.0.get(black_box(&sessions.1)).is_ok();
            (found, black_box(&answer).clone())
        });
    }
}
