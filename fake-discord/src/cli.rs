//! Command-line options.
//!
//! Why it exists: the fake takes a handful of flags and we avoid a parser
//! dependency. One table, [`OPTIONS`], drives both parsing and `--help`, so
//! the two cannot drift apart (README.md repeats the table).
//!
//! Invariant: [`parse`] either returns a fully validated [`Config`] or an
//! error message; nothing downstream re-checks flag values.

use std::time::Duration;

use crate::gateway::GatewayOptions;

/// One flag: its name, value placeholder (`None` for switches), default and help.
struct Opt {
    flag: &'static str,
    value: Option<&'static str>,
    default: &'static str,
    help: &'static str,
}

const OPTIONS: &[Opt] = &[
    Opt {
        flag: "--host",
        value: Some("HOST"),
        default: "127.0.0.1",
        help: "address to listen on",
    },
    Opt {
        flag: "--port",
        value: Some("PORT"),
        default: "0",
        help: "port to listen on; 0 picks a free one (printed at start)",
    },
    Opt {
        flag: "--world",
        value: Some("FILE"),
        default: "built-in demo world",
        help: "JSON world file (see README.md)",
    },
    Opt {
        flag: "--route-limit",
        value: Some("N"),
        default: "5",
        help: "requests per route bucket per window",
    },
    Opt {
        flag: "--route-window-ms",
        value: Some("MS"),
        default: "1000",
        help: "length of a route bucket window",
    },
    Opt {
        flag: "--global-limit",
        value: Some("N"),
        default: "50",
        help: "requests per bot in any rolling second",
    },
    Opt {
        flag: "--latency-ms",
        value: Some("MS"),
        default: "0",
        help: "fixed delay added to every Discord-route answer",
    },
    Opt {
        flag: "--jitter-ms",
        value: Some("MS"),
        default: "0",
        help: "random delay (0 to MS) before a Discord-route request arrives",
    },
    Opt {
        flag: "--invalid-limit",
        value: Some("N"),
        default: "10000",
        help: "invalid answers (401, 403, non-shared 429) per IP that ban it",
    },
    Opt {
        flag: "--invalid-window-ms",
        value: Some("MS"),
        default: "600000",
        help: "window in which --invalid-limit invalid answers ban an IP",
    },
    Opt {
        flag: "--ban-ms",
        value: Some("MS"),
        default: "3600000",
        help: "how long a banned IP gets Cloudflare's HTML 429 for everything",
    },
    Opt {
        flag: "--send-limit",
        value: Some("N"),
        default: "5",
        help: "message sends and edits per (bot, channel) per send window",
    },
    Opt {
        flag: "--send-window-ms",
        value: Some("MS"),
        default: "5000",
        help: "length of the send bucket window",
    },
    Opt {
        flag: "--reaction-window-ms",
        value: Some("MS"),
        default: "250",
        help: "one reaction PUT/DELETE per (bot, channel) per this",
    },
    Opt {
        flag: "--nonce-window-ms",
        value: Some("MS"),
        default: "120000",
        help: "how long enforce_nonce deduplicates a bot's nonce",
    },
    Opt {
        flag: "--max-file-bytes",
        value: Some("N"),
        default: "10485760",
        help: "largest uploaded file (413 50045 above)",
    },
    Opt {
        flag: "--max-request-bytes",
        value: Some("N"),
        default: "26214400",
        help: "largest request body, judged by Content-Length (413 40005 above)",
    },
    Opt {
        flag: "--gateway-heartbeat-ms",
        value: Some("MS"),
        default: "41250",
        help: "heartbeat_interval sent in the Gateway's Hello",
    },
    Opt {
        flag: "--gateway-max-concurrency",
        value: Some("N"),
        default: "1",
        help: "max_concurrency: identify buckets, one IDENTIFY each per 5 s",
    },
    Opt {
        flag: "--gateway-session-total",
        value: Some("N"),
        default: "1000",
        help: "session starts (IDENTIFYs) per bot per reset window",
    },
    Opt {
        flag: "--gateway-session-reset-ms",
        value: Some("MS"),
        default: "86400000",
        help: "length of the session-start window (reset_after counts down)",
    },
    Opt {
        flag: "--gateway-guilds-per-shard",
        value: Some("N"),
        default: "2500",
        help: "guilds one shard may hold; more closes 4011 Sharding required",
    },
    Opt {
        flag: "--gateway-session-ttl-ms",
        value: Some("MS"),
        default: "180000",
        help: "how long a disconnected Gateway session stays resumable",
    },
    Opt {
        flag: "--gateway-tls-cert",
        value: Some("FILE"),
        default: "off (ws://)",
        help: "PEM certificate chain: the Gateway listeners speak TLS (wss://); needs --gateway-tls-key",
    },
    Opt {
        flag: "--gateway-tls-key",
        value: Some("FILE"),
        default: "off (ws://)",
        help: "PEM private key of --gateway-tls-cert",
    },
    Opt {
        flag: "--no-ratelimit",
        value: None,
        default: "off",
        help: "disable rate limiting and X-RateLimit-* headers",
    },
    Opt {
        flag: "--help",
        value: None,
        default: "",
        help: "print this help",
    },
];

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub world: Option<String>,
    pub route_limit: u32,
    pub route_window: Duration,
    pub global_limit: u32,
    pub latency: Duration,
    pub jitter: Duration,
    pub ratelimit: bool,
    pub invalid_limit: usize,
    pub invalid_window: Duration,
    pub ban: Duration,
    pub send_limit: u32,
    pub send_window: Duration,
    pub reaction_window: Duration,
    pub nonce_window: Duration,
    pub max_file_bytes: usize,
    pub max_request_bytes: usize,
    pub gateway: GatewayOptions,
    /// `--gateway-tls-cert` and `--gateway-tls-key`: PEM files, both or
    /// neither.
    pub gateway_tls: Option<(String, String)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 0,
            world: None,
            route_limit: 5,
            route_window: Duration::from_millis(1000),
            global_limit: 50,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            ratelimit: true,
            invalid_limit: 10_000,
            invalid_window: Duration::from_secs(600),
            ban: Duration::from_secs(3600),
            send_limit: 5,
            send_window: Duration::from_millis(5000),
            reaction_window: Duration::from_millis(250),
            nonce_window: Duration::from_millis(120_000),
            max_file_bytes: 10 * 1024 * 1024,
            max_request_bytes: 25 * 1024 * 1024,
            gateway: GatewayOptions::default(),
            gateway_tls: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Box<Config>),
    Help,
}

/// The `--help` text.
pub fn usage() -> String {
    let mut out = String::from(
        "fake-discord: a fake of Discord's REST API v10 for tests\n\n\
         Usage: fake-discord [OPTIONS]\n\nOptions:\n",
    );
    for o in OPTIONS {
        let left = match o.value {
            Some(v) => format!("{} {v}", o.flag),
            None => o.flag.to_string(),
        };
        let default = if o.default.is_empty() {
            String::new()
        } else {
            format!(" [default: {}]", o.default)
        };
        out.push_str(&format!("  {left:<22} {}{default}\n", o.help));
    }
    out.push_str("\nClients use http://HOST:PORT/api/v10; the control API is under /_fake/.\n");
    out
}

fn number<T>(flag: &str, value: &str, min: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    match value.parse::<T>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!("{flag} expects an integer >= {min}, got {value:?}")),
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut cfg = Config::default();
    let (mut tls_cert, mut tls_key) = (None, None);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let opt = OPTIONS
            .iter()
            .find(|o| o.flag == flag)
            .ok_or_else(|| format!("unknown argument {arg:?}"))?;
        let value = match (opt.value, inline) {
            (None, None) => String::new(),
            (None, Some(_)) => return Err(format!("{flag} takes no value")),
            (Some(_), Some(v)) => v,
            (Some(_), None) => args
                .next()
                .ok_or_else(|| format!("{flag} expects a value"))?,
        };
        match opt.flag {
            "--help" => return Ok(Command::Help),
            "--host" => cfg.host = value,
            "--port" => cfg.port = number(&flag, &value, 0)?,
            "--world" => cfg.world = Some(value),
            "--route-limit" => cfg.route_limit = number(&flag, &value, 1)?,
            "--route-window-ms" => {
                cfg.route_window = Duration::from_millis(number(&flag, &value, 1)?)
            }
            "--global-limit" => cfg.global_limit = number(&flag, &value, 1)?,
            "--latency-ms" => cfg.latency = Duration::from_millis(number(&flag, &value, 0)?),
            "--jitter-ms" => cfg.jitter = Duration::from_millis(number(&flag, &value, 0)?),
            "--no-ratelimit" => cfg.ratelimit = false,
            "--invalid-limit" => cfg.invalid_limit = number(&flag, &value, 1)?,
            "--invalid-window-ms" => {
                cfg.invalid_window = Duration::from_millis(number(&flag, &value, 1)?)
            }
            "--ban-ms" => cfg.ban = Duration::from_millis(number(&flag, &value, 1)?),
            "--send-limit" => cfg.send_limit = number(&flag, &value, 1)?,
            "--send-window-ms" => {
                cfg.send_window = Duration::from_millis(number(&flag, &value, 1)?)
            }
            "--reaction-window-ms" => {
                cfg.reaction_window = Duration::from_millis(number(&flag, &value, 1)?)
            }
            "--nonce-window-ms" => {
                cfg.nonce_window = Duration::from_millis(number(&flag, &value, 1)?)
            }
            "--max-file-bytes" => cfg.max_file_bytes = number(&flag, &value, 1)?,
            "--max-request-bytes" => cfg.max_request_bytes = number(&flag, &value, 1)?,
            "--gateway-heartbeat-ms" => {
                cfg.gateway.heartbeat_interval = Duration::from_millis(number(&flag, &value, 1)?)
            }
            "--gateway-max-concurrency" => cfg.gateway.max_concurrency = number(&flag, &value, 1)?,
            "--gateway-session-total" => cfg.gateway.session_total = number(&flag, &value, 0)?,
            "--gateway-session-reset-ms" => {
                cfg.gateway.session_reset = Duration::from_millis(number(&flag, &value, 1)?)
            }
            "--gateway-guilds-per-shard" => {
                cfg.gateway.guilds_per_shard = number(&flag, &value, 1)?
            }
            "--gateway-session-ttl-ms" => {
                cfg.gateway.session_ttl = Duration::from_millis(number(&flag, &value, 1)?)
            }
            "--gateway-tls-cert" => tls_cert = Some(value),
            "--gateway-tls-key" => tls_key = Some(value),
            _ => unreachable!("every option in OPTIONS is handled"),
        }
    }
    cfg.gateway_tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err("--gateway-tls-cert and --gateway-tls-key go together".into()),
    };
    Ok(Command::Run(Box::new(cfg)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(parse(args("")), Ok(Command::Run(Box::default())));
        let Ok(Command::Run(c)) = parse(args(
            "--port 8080 --route-limit=2 --no-ratelimit --latency-ms 5",
        )) else {
            panic!()
        };
        assert_eq!(c.port, 8080);
        assert_eq!(c.route_limit, 2);
        assert!(!c.ratelimit);
        assert_eq!(c.latency, Duration::from_millis(5));
        assert_eq!(parse(args("--help")), Ok(Command::Help));
    }

    #[test]
    fn write_flags() {
        let Ok(Command::Run(d)) = parse(args("")) else {
            panic!()
        };
        assert_eq!((d.send_limit, d.send_window), (5, Duration::from_secs(5)));
        assert_eq!(d.reaction_window, Duration::from_millis(250));
        assert_eq!(d.nonce_window, Duration::from_secs(120));
        assert_eq!(d.max_file_bytes, 10 * 1024 * 1024);
        assert_eq!(d.max_request_bytes, 25 * 1024 * 1024);
        let Ok(Command::Run(c)) = parse(args(
            "--send-limit 2 --send-window-ms=700 --reaction-window-ms 40 \
             --nonce-window-ms 900 --max-file-bytes 100 --max-request-bytes=1000",
        )) else {
            panic!()
        };
        assert_eq!(
            (c.send_limit, c.send_window),
            (2, Duration::from_millis(700))
        );
        assert_eq!(c.reaction_window, Duration::from_millis(40));
        assert_eq!(c.nonce_window, Duration::from_millis(900));
        assert_eq!((c.max_file_bytes, c.max_request_bytes), (100, 1000));
        assert!(parse(args("--send-limit 0")).is_err());
        assert!(parse(args("--max-file-bytes x")).is_err());
        assert!(parse(args("--reaction-window-ms 0")).is_err());
    }

    #[test]
    fn gateway_flags() {
        let Ok(Command::Run(d)) = parse(args("")) else {
            panic!()
        };
        assert_eq!(d.gateway.heartbeat_interval, Duration::from_millis(41_250));
        assert_eq!(
            (d.gateway.max_concurrency, d.gateway.session_total),
            (1, 1000)
        );
        let Ok(Command::Run(c)) = parse(args(
            "--gateway-heartbeat-ms 500 --gateway-max-concurrency=2 --gateway-session-total 3 \
             --gateway-guilds-per-shard 10 --gateway-session-ttl-ms 50",
        )) else {
            panic!()
        };
        assert_eq!(c.gateway.heartbeat_interval, Duration::from_millis(500));
        assert_eq!((c.gateway.max_concurrency, c.gateway.session_total), (2, 3));
        assert_eq!(c.gateway.guilds_per_shard, 10);
        assert_eq!(c.gateway.session_ttl, Duration::from_millis(50));
        assert!(parse(args("--gateway-max-concurrency 0")).is_err());
        assert_eq!(d.gateway_tls, None);
        let Ok(Command::Run(t)) = parse(args("--gateway-tls-cert c.pem --gateway-tls-key=k.pem"))
        else {
            panic!()
        };
        assert_eq!(t.gateway_tls, Some(("c.pem".into(), "k.pem".into())));
        assert!(parse(args("--gateway-tls-cert c.pem")).is_err());
        assert!(parse(args("--gateway-tls-key k.pem")).is_err());
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse(args("--route-limit 0")).is_err());
        assert!(parse(args("--port x")).is_err());
        assert!(parse(args("--bogus")).is_err());
        assert!(parse(args("--world")).is_err());
    }

    #[test]
    fn usage_lists_every_flag() {
        let u = usage();
        assert!(OPTIONS.iter().all(|o| u.contains(o.flag)));
    }
}
