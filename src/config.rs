//! config: every option of the service, its flag, its environment variable,
//! its default and its help text, in one place.
//!
//! The struct below *is* the documentation: clap derives `--help` from it, and
//! the README table mirrors it. A flag wins over its environment variable.
//! Parsing validates ranges, so the rest of the program never sees a bad value.

use std::time::Duration;

use clap::{CommandFactory, Parser};

use crate::api::passthrough::RouteGroups;
use crate::api::writes::{DEFAULT_MAX_UPLOAD_BYTES, DefaultMentions};
use crate::discord::gateway::Intents;
use crate::discord::gateway::tls::ExtraRoots;
use crate::discord::guard::DEFAULT_INVALID_THRESHOLD;
use crate::discord::ratelimit::DEFAULT_GLOBAL_PER_SECOND;
use crate::http::clients::TrustedProxies;
use crate::http::cors::{CorsOrigins, parse_origins};
use crate::observe::logging::{LogFormat, LogLevel};
use crate::store::seal::SessionKey;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "discord-bot-backend",
    version,
    allow_negative_numbers = true,
    args_override_self = true,
    about = "Holds Discord bot tokens server-side and serves guilds, members, channels and \
             messages to clients that present a session ID."
)]
pub struct Config {
    /// Address to bind.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to bind; 0 picks a free one.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Base URL of Discord's REST API (tests point it at a local fake).
    #[arg(long, env = "DISCORD_API_URL", default_value = "https://discord.com/api/v10",
          value_parser = parse_base_url)]
    pub discord_api: String,

    /// Request-handling threads: how many requests are worked on at once,
    /// each possibly waiting on Discord or its rate limits. By Little's
    /// law, workers ≥ request rate × Discord latency: the default carries
    /// 256 connections at 50 ms of Discord latency at 0.98 of direct
    /// throughput (`make bench`, scenario B); 64 managed 0.25.
    #[arg(long, env = "WORKERS", default_value_t = 256,
          value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub workers: u16,

    /// Comma-separated allowed origins, or `*`.
    #[arg(long, env = "CORS_ORIGINS", default_value = "*", value_parser = parse_origins)]
    pub cors_origins: CorsOrigins,

    /// Seconds a session may sit unused before it expires.
    #[arg(long, env = "SESSION_IDLE_TIMEOUT", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub session_idle_timeout: u64,

    /// Sessions held at once; logins beyond it get 503.
    #[arg(long, env = "MAX_SESSIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_sessions: u64,

    /// Log level.
    #[arg(long, env = "LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Milliseconds a Discord call may take before the client gets 504.
    #[arg(long = "upstream-timeout", env = "UPSTREAM_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub upstream_timeout_ms: u64,

    /// Milliseconds a request may wait for Discord's rate limits before the
    /// client gets 429.
    #[arg(long = "max-ratelimit-wait", env = "MAX_RATELIMIT_WAIT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub max_ratelimit_wait_ms: u64,

    /// Milliseconds a client connection may stay idle or stall mid-request
    /// before it is closed.
    #[arg(long = "client-timeout", env = "CLIENT_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub client_timeout_ms: u64,

    /// Requests per second each bot may send Discord (Discord's global
    /// limit is 50; raise it only for bots Discord granted more).
    #[arg(long, env = "GLOBAL_RATE_LIMIT", default_value_t = DEFAULT_GLOBAL_PER_SECOND,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub global_rate_limit: u32,

    /// Directory of the embedded database (SQLite): sessions survive a
    /// restart. Made with mode 0700 if missing; one instance per directory.
    /// Without it, everything stays in memory; with --redis-url it is not
    /// used (the shared state lives in Redis).
    #[arg(long, env = "DATA_DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// Sessions one bot token may hold at once, so one client cannot fill
    /// --max-sessions for everyone; more logins with it get 503.
    #[arg(long, env = "MAX_SESSIONS_PER_BOT", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_sessions_per_bot: u32,

    /// Invalid Discord answers (401, 403, non-shared 429) in 10 minutes,
    /// across all bots, past which logins with new tokens get 503. Discord
    /// bans the host's IP at 10,000.
    #[arg(long, env = "INVALID_REQUEST_THRESHOLD", default_value_t = DEFAULT_INVALID_THRESHOLD,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub invalid_request_threshold: u64,

    /// Milliseconds a Discord 403 (or 404 of an unknown guild or channel)
    /// is answered by the service itself, per bot, route and guild or
    /// channel, instead of asking Discord again. A permission granted in
    /// Discord works again within this time.
    #[arg(long, env = "REFUSAL_CACHE_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub refusal_cache_ms: u64,

    /// `allowed_mentions` added to a message that has none: `users`, `none`,
    /// or `discord` (add nothing).
    #[arg(long, env = "DEFAULT_ALLOWED_MENTIONS", default_value = "users",
          value_parser = DefaultMentions::parse)]
    pub default_allowed_mentions: DefaultMentions,

    /// Route groups the Discord passthrough (`/api/discord/v10/...`) serves:
    /// any of `read`, `messaging`, `moderation`, `admin`, or `none`.
    #[arg(long, env = "DISCORD_ROUTES", default_value = "read,messaging",
          value_parser = RouteGroups::parse)]
    pub discord_routes: RouteGroups,

    /// Gateway intents: `auto` (every non-privileged intent, plus the
    /// privileged ones the bot's application has enabled, never presences),
    /// or a comma-separated list of intent names.
    #[arg(long, env = "GATEWAY_INTENTS", default_value = "auto",
          value_parser = Intents::parse)]
    pub gateway_intents: Intents,

    /// PEM file of extra root certificates the Gateway's TLS trusts beside
    /// the built-in Mozilla roots: for a private deployment behind a
    /// TLS-intercepting proxy, or a test Gateway (the fake Discord's
    /// `wss://` in `make bench-events`). Read at start; unset, only the
    /// built-in roots.
    #[arg(long, env = "GATEWAY_CA_FILE", value_parser = ExtraRoots::from_file)]
    pub gateway_ca_file: Option<ExtraRoots>,

    /// Client connections open at once; one more is answered 503 and closed.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// Bytes a message upload (multipart/form-data on the message routes)
    /// may have in all; a larger one gets 413 before it is read. At most 4
    /// are received at once, each held at most twice in memory: size the
    /// memory limit by 8 times this.
    #[arg(long, env = "MAX_UPLOAD_BYTES", default_value_t = DEFAULT_MAX_UPLOAD_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1..=104_857_600))]
    pub max_upload_bytes: u64,

    /// Requests per second each client IP, and each session, may make
    /// (a token bucket; more get 429 with Retry-After). 0 turns it off.
    #[arg(long, env = "CLIENT_RATE_LIMIT", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub client_rate_limit: u32,

    /// Requests a client IP or session may make at once before
    /// --client-rate-limit applies.
    #[arg(long, env = "CLIENT_BURST", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub client_burst: u32,

    /// Logins per minute each client IP may make, valid or not (a token
    /// bucket holding a minute's worth; more get 429 with Retry-After). 0
    /// turns it off. Failed logins have their own, lower limit.
    #[arg(long, env = "LOGIN_RATE_LIMIT", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub login_rate_limit: u32,

    /// Comma-separated addresses or CIDR networks of reverse proxies whose
    /// X-Forwarded-For is believed; by default none is, and the client is
    /// the connection's peer.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "",
          value_parser = TrustedProxies::parse)]
    pub trusted_proxies: TrustedProxies,

    /// Log line format: text for people, json (one object per line) for
    /// log shippers.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Redis URL (redis://[:password@]host:port[/db]): sessions and the
    /// cluster's rate limits live there, shared by every instance that
    /// names the same Redis. Requires --session-key. Unset: in memory.
    #[arg(long, env = "REDIS_URL", hide_env_values = true,
          value_parser = Secret("--redis-url", parse_redis_url))]
    pub redis_url: Option<String>,

    /// 64 hex characters (32 bytes, e.g. `openssl rand -hex 32`): seals bot
    /// tokens and hashes session IDs in Redis (the same on every instance)
    /// or in --data-dir (where a key is generated into secret.key if none
    /// is given).
    #[arg(long, env = "SESSION_KEY", hide_env_values = true,
          value_parser = Secret("--session-key", SessionKey::parse))]
    pub session_key: Option<SessionKey>,

    /// Milliseconds a Redis connect or answer may take before the request
    /// gets 503.
    #[arg(long = "redis-timeout", env = "REDIS_TIMEOUT_MS", default_value_t = 1500,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub redis_timeout_ms: u64,

    /// With --redis-url: instances with the same value share one count of
    /// invalid Discord requests, as Discord counts them per outbound IP.
    /// Give each instance that leaves through its own IP its own value.
    #[arg(long, env = "OUTBOUND_IP_GROUP", default_value = "default",
          value_parser = parse_group)]
    pub outbound_ip_group: String,
}

/// One option as clap knows it: the single source that `--help`, the
/// README's tables and `deploy/env.example` are checked against
/// (`tests/options.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionDoc {
    pub flag: String,
    pub env: Option<String>,
    /// The default as `--help` prints it; `None` when the option has none.
    pub default: Option<String>,
}

/// Every long option of the service, in declaration order.
pub fn options() -> Vec<OptionDoc> {
    Config::command()
        .get_arguments()
        .filter_map(|arg| {
            let flag = format!("--{}", arg.get_long()?);
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            let default = arg
                .get_default_values()
                .first()
                .map(|d| d.to_string_lossy().into_owned());
            Some(OptionDoc { flag, env, default })
        })
        .filter(|o| o.flag != "--help" && o.flag != "--version")
        .collect()
}

impl Config {
    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }

    pub fn refusal_cache(&self) -> Duration {
        Duration::from_millis(self.refusal_cache_ms)
    }

    pub fn max_ratelimit_wait(&self) -> Duration {
        Duration::from_millis(self.max_ratelimit_wait_ms)
    }

    pub fn client_timeout(&self) -> Duration {
        Duration::from_millis(self.client_timeout_ms)
    }

    pub fn max_upload_bytes(&self) -> usize {
        usize::try_from(self.max_upload_bytes).expect("at most 100 MiB fits a usize")
    }

    /// Checks that clap's per-option parsing cannot express: the options
    /// that only make sense together. The message is one line naming them.
    pub fn validate(&self) -> Result<(), String> {
        if self.redis_url.is_some() && self.session_key.is_none() {
            return Err(
                "error: --redis-url needs --session-key (or SESSION_KEY): 64 hex \
                        characters, the same on every instance"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    pub fn session_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.session_idle_timeout)
    }

    /// How many of one bot's requests may be worked on at once: half the
    /// workers, so one flooded bot always leaves room for the others.
    pub fn max_in_flight_per_bot(&self) -> usize {
        (usize::from(self.workers) / 2).max(1)
    }
}

/// A value parser for options that may hold a secret (a password in a
/// URL, a key): its error names the option but, unlike clap's own, never
/// echoes the value.
#[derive(Clone)]
struct Secret<T>(&'static str, fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> clap::builder::TypedValueParser for Secret<T> {
    type Value = T;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let refuse = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for '{}': {why}\n", self.0),
            )
        };
        let text = value
            .to_str()
            .ok_or_else(|| refuse("not valid UTF-8".into()))?;
        (self.1)(text).map_err(refuse)
    }
}

fn parse_group(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(value.to_string())
    } else {
        Err("expected 1 to 64 letters, digits, '-', '_' or '.'".into())
    }
}

fn parse_redis_url(value: &str) -> Result<String, String> {
    // TLS (rediss://) would need a TLS feature of the redis crate we do not
    // build; a unix socket works with redis+unix:// or unix://.
    let scheme_ok = ["redis://", "redis+unix://", "unix://"]
        .iter()
        .any(|scheme| value.starts_with(scheme));
    if scheme_ok && redis::Client::open(value).is_ok() {
        Ok(value.to_string())
    } else {
        // The value is not echoed: it may hold a password.
        Err("expected redis://[:password@]host[:port][/db] or unix:///path".into())
    }
}

fn parse_base_url(value: &str) -> Result<String, String> {
    let ok = (value.starts_with("http://") || value.starts_with("https://"))
        && value.bytes().all(|b| b.is_ascii_graphic())
        && !value.contains(['?', '#']);
    if ok {
        Ok(value.trim_end_matches('/').to_string())
    } else {
        Err("expected an http:// or https:// URL without query or fragment".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("discord-bot-backend").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.port, 3000);
        assert_eq!(c.discord_api, "https://discord.com/api/v10");
        assert_eq!(c.cors_origins, CorsOrigins::Any);
        assert_eq!(c.session_idle_timeout, 86_400);
        assert_eq!(c.max_sessions, 10_000);
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.upstream_timeout_ms, 10_000);
        assert_eq!(c.max_ratelimit_wait_ms, 10_000);
        assert_eq!(c.client_timeout_ms, 30_000);
        assert_eq!(c.client_rate_limit, 100);
        assert_eq!(c.client_burst, 200);
        assert_eq!(c.trusted_proxies, TrustedProxies::default());
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        assert!(parse(&["--trusted-proxies", "10.0.0.0/8, ::1,192.0.2.4"]).is_ok());
        assert!(parse(&["--trusted-proxies", "proxy.local"]).is_err());
        assert!(parse(&["--trusted-proxies", "10.0.0.0/40"]).is_err());
    }

    #[test]
    fn origin_list_is_split_and_checked() {
        let c = parse(&["--cors-origins", "https://a.example, http://b.example:8080"]).unwrap();
        assert_eq!(
            c.cors_origins,
            CorsOrigins::List(vec![
                "https://a.example".into(),
                "http://b.example:8080".into()
            ])
        );
        assert!(parse(&["--cors-origins", "a.example"]).is_err());
        assert!(parse(&["--cors-origins", "https://a.example/"]).is_err());
    }

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn redis_needs_a_session_key() {
        assert!(
            parse(&["--redis-url", "redis://127.0.0.1:6379"])
                .unwrap()
                .validate()
                .is_err()
        );
        let c = parse(&[
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--session-key",
            KEY,
        ])
        .unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        assert!(parse(&["--session-key", "abc"]).is_err());
        let err = parse(&["--redis-url", "http://:hunter2@x", "--session-key", KEY]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("--redis-url"), "{err}");
        let err = parse(&["--session-key", &KEY[..63]]).unwrap_err();
        assert!(!err.to_string().contains(&KEY[..20]), "{err}");
        assert_eq!(parse(&[]).unwrap().redis_url, None);
    }

    #[test]
    fn zero_workers_is_refused() {
        assert!(parse(&["--workers", "0"]).is_err());
    }
}
