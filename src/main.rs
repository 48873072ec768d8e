//! The binary: parse the config, start logging, wire the modules together,
//! serve until SIGINT or SIGTERM, then drain and exit 0.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};

use discord_bot_backend::api::Api;
use discord_bot_backend::api::writes::WriteSettings;
use discord_bot_backend::config::Config;
use discord_bot_backend::discord::Discord;
use discord_bot_backend::discord::bots::BotRegistry;
use discord_bot_backend::discord::gateway::{BotGateway, GatewayConfig};
use discord_bot_backend::discord::guard::{InvalidRequests, LoginThrottle};
use discord_bot_backend::discord::ratelimit::SystemClock;
use discord_bot_backend::events::{self, Checkpoints, Events, NoCheckpoints};
use discord_bot_backend::http::clients::ClientLimiter;
use discord_bot_backend::http::cors::Cors;
use discord_bot_backend::http::server::{Limits, Server};
use discord_bot_backend::observe::logging;
use discord_bot_backend::store::idempotency::{IdempotencyStore, MemoryIdempotency};
use discord_bot_backend::store::redis::{
    RedisIdempotency, RedisInvalidCount, RedisLimiter, RedisPool, RedisRelay, RedisStore,
    RedisTickets,
};
use discord_bot_backend::store::tickets::MemoryTickets;
use discord_bot_backend::store::{self, DurableStore, MemoryStore, SessionStore};

/// Longest the sweeper sleeps between passes; shorter idle timeouts sweep
/// four times per timeout, so a session outlives its timeout by at most 25 %.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Where sessions and idempotency records live, and the secret message
/// nonces are derived under when it must be shared (by instances, or across
/// restarts).
type Stores = (
    Arc<dyn SessionStore>,
    Arc<dyn IdempotencyStore>,
    Option<[u8; 32]>,
);

fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // API.md: "a one-line message naming the option".
            let rendered = err.to_string();
            eprintln!(
                "{}",
                rendered
                    .lines()
                    .next()
                    .unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    if let Err(message) = config.validate() {
        eprintln!("{message}");
        return ExitCode::from(2);
    }
    logging::init(config.log_level, config.log_format);
    let code = match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            log::error!("{message}");
            ExitCode::FAILURE
        }
    };
    log::logger().flush();
    code
}

fn run(config: &Config) -> Result<(), String> {
    // Each connection is a file descriptor; the usual soft limit of 1024
    // would cap us far below --max-connections. Raise it to the hard limit.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < u64::from(config.max_connections) + 64 => log::warn!(
            "open-file limit {limit} is below --max-connections {}; raise `ulimit -n`",
            config.max_connections
        ),
        Ok(_) => {}
        Err(err) => log::warn!("cannot raise the open-file limit: {err}"),
    }
    let bots = Arc::new(BotRegistry::new(
        config.global_rate_limit,
        config.max_in_flight_per_bot(),
    ));
    let redis = match &config.redis_url {
        Some(url) => Some(Arc::new(RedisPool::new(url, config.redis_timeout())?)),
        None => None,
    };
    // Where each bot's last event ID and Gateway sessions survive a restart.
    let mut checkpoints: Arc<dyn Checkpoints> = Arc::new(NoCheckpoints);
    // Idempotency records live where sessions do: shared in Redis, on disk
    // with --data-dir, else in this process only.
    let (store, idempotency, nonce_secret): Stores = match (&redis, &config.session_key) {
        (Some(pool), Some(key)) => {
            log::info!("sessions are in Redis, shared with every instance that uses it");
            if let Some(dir) = &config.data_dir {
                // Deploy files set DATA_DIR by default; a Redis user should
                // not have to unset it, but should know it is not used.
                log::warn!(
                    "--data-dir {} is not used: with --redis-url the shared state lives in Redis",
                    dir.display()
                );
            }
            let sessions = Arc::new(RedisStore::new(
                Arc::clone(pool),
                key.clone(),
                Arc::clone(&bots),
                config.max_sessions,
                config.max_sessions_per_bot,
                config.session_idle_timeout(),
            ));
            (
                sessions,
                Arc::new(RedisIdempotency::new(Arc::clone(pool))),
                Some(key.nonce_secret()),
            )
        }
        _ => {
            let memory = MemoryStore::new(
                config.max_sessions as usize,
                config.max_sessions_per_bot,
                config.session_idle_timeout(),
            );
            match &config.data_dir {
                Some(dir) => {
                    let durable = DurableStore::open(
                        dir,
                        config.session_key.clone(),
                        &bots,
                        memory,
                        config.session_idle_timeout(),
                    )?;
                    let secret = durable.nonce_secret();
                    checkpoints = Arc::clone(&durable) as _;
                    (Arc::clone(&durable) as _, durable as _, Some(secret))
                }
                None => (
                    Arc::new(memory),
                    Arc::new(MemoryIdempotency::default()),
                    None,
                ),
            }
        }
    };
    let invalid = InvalidRequests::new(config.invalid_request_threshold);
    let invalid = Arc::new(match &redis {
        Some(pool) => invalid.with_shared(Box::new(RedisInvalidCount::new(
            Arc::clone(pool),
            &config.outbound_ip_group,
        ))),
        None => invalid,
    });
    let discord = Discord::new(
        &config.discord_api,
        config.upstream_timeout(),
        usize::from(config.workers),
        Arc::new(SystemClock),
        Arc::clone(&invalid),
        config.refusal_cache(),
    );
    let discord = Arc::new(match (&redis, &config.session_key) {
        (Some(pool), Some(key)) => discord.with_cluster(Arc::new(RedisLimiter::new(
            Arc::clone(pool),
            key.clone(),
            config.global_rate_limit,
            config.upstream_timeout() + Duration::from_secs(1),
        ))),
        _ => discord,
    });
    discord_bot_backend::discord::gateway::tls::trust(config.gateway_ca_file.as_ref());
    let gateway = GatewayConfig {
        intents: config.gateway_intents.clone(),
        ..GatewayConfig::default()
    };
    let gateway_discord = Arc::clone(&discord);
    let events = Events::new(
        Box::new(move |bot, sink, resume| {
            BotGateway::start(
                Arc::clone(&gateway_discord),
                bot,
                gateway.clone(),
                sink,
                resume,
            )
        }),
        events::IDLE_CLOSE,
    )
    .with_checkpoints(checkpoints);
    let events = Arc::new(match (&redis, &config.session_key) {
        // One Gateway connection per bot across the cluster.
        (Some(pool), Some(key)) => {
            events.with_relay(Arc::new(RedisRelay::new(Arc::clone(pool), key.clone())))
        }
        _ => events,
    });
    events::spawn_cluster(Arc::downgrade(&events));
    events::spawn_checkpointer(Arc::downgrade(&events));
    let api = Arc::new(Api {
        store: Arc::clone(&store),
        bots: Arc::clone(&bots),
        discord,
        cors: Cors::new(config.cors_origins.clone()),
        max_wait: config.max_ratelimit_wait(),
        invalid,
        logins: LoginThrottle::default(),
        login_rate: ClientLimiter::per_minute(config.login_rate_limit),
        clients: ClientLimiter::new(config.client_rate_limit, config.client_burst),
        proxies: config.trusted_proxies.clone(),
        discord_routes: config.discord_routes,
        events: Arc::clone(&events),
        tickets: match (&redis, &config.session_key) {
            (Some(pool), Some(key)) => Arc::new(RedisTickets::new(Arc::clone(pool), key.clone())),
            _ => Arc::new(MemoryTickets::default()),
        },
        writes: WriteSettings::new(
            idempotency,
            nonce_secret,
            config.default_allowed_mentions,
            // A write waits at most its rate-limit budget in all, then makes
            // at most two calls (a DM: open the channel, then send) of at
            // most two attempts each.
            config.max_ratelimit_wait() + config.upstream_timeout() * 4 + Duration::from_secs(5),
        )
        .with_max_upload_bytes(config.max_upload_bytes()),
    });
    let sweep_api = Arc::clone(&api);
    store::sessions::spawn_sweeper(
        Arc::clone(&store),
        bots,
        move || {
            let now = std::time::Instant::now();
            sweep_api.logins.sweep(now);
            sweep_api.clients.sweep(now);
            sweep_api.login_rate.sweep(now);
            sweep_api.events.sweep();
        },
        (config.session_idle_timeout() / 4).clamp(Duration::from_millis(100), MAX_SWEEP_INTERVAL),
    );

    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let limits = Limits {
        client_timeout: config.client_timeout(),
        max_connections: config.max_connections as usize,
        workers: usize::from(config.workers),
    };
    let addr = format!("{}:{}", bracket_ipv6(&config.host), config.port);
    let server =
        Server::start(&addr, limits, api).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = server.local_addr();
    let listening = format!("listening on http://{bound}");
    if log::log_enabled!(log::Level::Info) {
        log::info!("{listening}");
        // Whoever started us waits for this line.
        log::logger().flush();
    } else {
        // API.md promises this line whatever the log level.
        eprintln!("{listening}");
    }

    let signal = signals.forever().next().unwrap_or(SIGTERM);
    log::info!("received signal {signal}; finishing in-flight requests");
    // In-flight requests are bounded by the upstream timeout and the
    // rate-limit wait budget; give them that, plus a second.
    let grace = config.upstream_timeout() + config.max_ratelimit_wait() + Duration::from_secs(1);
    let abandoned = server.shutdown(grace);
    if abandoned > 0 {
        log::warn!("exiting with {abandoned} request(s) still in flight");
    }
    // Closed with 4000, so the Gateway sessions stay resumable.
    events.stop_all();
    store.flush();
    log::info!("stopped");
    Ok(())
}

/// `::1` must be written `[::1]` in a socket address.
fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}
