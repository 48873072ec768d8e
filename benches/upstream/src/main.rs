//! bench-upstream: answers the Discord routes `make bench` uses as fast as it
//! can, so the benchmark measures the service, not its upstream.
//!
//! `GET /api/v10/users/@me` → a user whose id is derived from the token (so
//! 10,000 tokens are 10,000 bots); `GET /api/v10/channels/{id}/messages` → one
//! prebuilt page of 50 messages (about 25 KB); `POST` there → one message
//! (about 1 KB, as Discord answers a send); `POST
//! /api/v10/channels/{id}/typing` → 204; `GET /_stats` → requests
//! served. `--latency-ms N` delays every Discord answer by N ms.
//!
//! Like Discord, every answer carries the five rate-limit headers
//! (`X-RateLimit-Limit`, `-Remaining`, `-Reset`, `-Reset-After`, `-Bucket`)
//! of a bucket per (token, channel): `LIMIT` requests per one-second window
//! that starts with the first request after the last one ended. At the
//! benchmark's rates no bucket runs out, so the service never waits, but its
//! limiter does all the bookkeeping a real answer costs.
//! `--no-ratelimit-headers` answers without them, to measure what that
//! bookkeeping costs (the headers-less run of `make bench`); the fake-discord
//! crate is what enforces limits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::header::HeaderValue;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Messages in the prebuilt page: the size the issue's scenarios name.
const PAGE_MESSAGES: u64 = 50;
/// Requests per bucket per window: far above a bot's share of the
/// benchmark's rate, so no client waits.
const LIMIT: u32 = 50;
const WINDOW: Duration = Duration::from_secs(1);
/// Bucket maps are sharded so tokio's threads rarely meet on a lock.
const SHARDS: usize = 16;
/// Bucket hashes as Discord names them (opaque hex).
const MESSAGES_BUCKET: &str = "80c17d2f203122d936070c88c8d10f33";
const ME_BUCKET: &str = "b7e1a4d2c9f03a5e6d4c2b1a0f9e8d7c";
const SEND_BUCKET: &str = "3b9e0c7f5a2d4e6b8c1f0a9d7e5c3b2a";
const TYPING_BUCKET: &str = "6d2f8a1c4e7b9d0a3c5e8f1b2d4a6c9e";

struct State {
    page: Bytes,
    sent: Bytes,
    latency: Duration,
    served: AtomicU64,
    /// `None` with `--no-ratelimit-headers`.
    buckets: Option<Vec<Mutex<HashMap<(u64, u64), Window>>>>,
}

/// One bucket's current window.
struct Window {
    started: Instant,
    used: u32,
}

impl State {
    /// Counts a request in its bucket and says what the headers say.
    fn take(&self, token: &str, channel: u64, now: Instant) -> Option<(u32, Duration)> {
        let shards = self.buckets.as_ref()?;
        let token = BuildHasherDefault::<DefaultHasher>::default().hash_one(token);
        let key = (token, channel);
        let shard = &shards[(token ^ channel) as usize % SHARDS];
        let mut windows = shard.lock().expect("no panics under this lock");
        let window = windows.entry(key).or_insert(Window { started: now, used: 0 });
        if now >= window.started + WINDOW {
            *window = Window { started: now, used: 0 };
        }
        window.used += 1;
        let remaining = LIMIT.saturating_sub(window.used);
        Some((remaining, window.started + WINDOW - now))
    }
}

fn message(n: u64) -> String {
    let id = 1_200_000_000_000_000_000u64 + n * 4_194_304;
    format!(
        concat!(
            r#"{{"id":"{id}","type":0,"content":"benchmark message number {n}, long enough to look like a real chat line with a few words in it","#,
            r#""channel_id":"1100000000000000001","author":{{"id":"1000000000000000{a:03}","username":"user{a}","avatar":null,"#,
            r#""discriminator":"0","public_flags":0,"flags":0,"banner":null,"accent_color":null,"global_name":"User {a}","#,
            r#""avatar_decoration_data":null,"banner_color":null,"clan":null}},"attachments":[],"embeds":[],"mentions":[],"#,
            r#""mention_roles":[],"pinned":false,"mention_everyone":false,"tts":false,"timestamp":"2026-11-23T12:00:{s:02}.000000+00:00","#,
            r#""edited_timestamp":null,"flags":0,"components":[],"reactions":[{{"emoji":{{"id":null,"name":"👍"}},"count":3,"#,
            r#""count_details":{{"burst":0,"normal":3}},"burst_colors":[],"me_burst":false,"burst_me":false,"me":false,"burst_count":0}}]}}"#
        ),
        id = id,
        n = n,
        a = n % 1000,
        s = n % 60
    )
}

fn page() -> Bytes {
    let items: Vec<String> = (0..PAGE_MESSAGES).rev().map(message).collect();
    Bytes::from(format!("[{}]", items.join(",")))
}

fn json(body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .header("Content-Type", "application/json")
        .body(Full::new(body))
        .expect("static response parts are valid")
}

/// Discord's five headers, as it formats them (seconds with three decimals).
fn with_limits(mut response: Response<Full<Bytes>>, bucket: &'static str, remaining: u32, reset_after: Duration) -> Response<Full<Bytes>> {
    let reset = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + reset_after;
    let headers = response.headers_mut();
    let value = |text: String| HeaderValue::from_str(&text).expect("digits and dots");
    headers.insert("x-ratelimit-limit", value(LIMIT.to_string()));
    headers.insert("x-ratelimit-remaining", value(remaining.to_string()));
    headers.insert("x-ratelimit-reset", value(format!("{:.3}", reset.as_secs_f64())));
    headers.insert("x-ratelimit-reset-after", value(format!("{:.3}", reset_after.as_secs_f64())));
    headers.insert("x-ratelimit-bucket", HeaderValue::from_static(bucket));
    response
}

async fn answer(state: Arc<State>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    if path == "/_stats" {
        let served = state.served.load(Ordering::Relaxed);
        return Ok(json(Bytes::from(format!(r#"{{"requests":{served}}}"#))));
    }
    state.served.fetch_add(1, Ordering::Relaxed);
    if !state.latency.is_zero() {
        tokio::time::sleep(state.latency).await;
    }
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let now = Instant::now();
    let response = if path == "/api/v10/users/@me" {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(token) % 1_000_000_000_000;
        let me = json(Bytes::from(format!(
            r#"{{"id":"{}","username":"bench{hash}","discriminator":"0","avatar":null,"bot":true}}"#,
            1_300_000_000_000_000_000u64 + hash
        )));
        match state.take(token, 0, now) {
            Some((remaining, reset_after)) => with_limits(me, ME_BUCKET, remaining, reset_after),
            None => me,
        }
    } else if let Some(channel) = path
        .strip_prefix("/api/v10/channels/")
        .and_then(|rest| rest.strip_suffix("/messages"))
    {
        let channel = channel.parse().unwrap_or(0);
        let (answer, bucket) = if request.method() == hyper::Method::POST {
            (json(state.sent.clone()), SEND_BUCKET)
        } else {
            (json(state.page.clone()), MESSAGES_BUCKET)
        };
        // Sends and reads are separate buckets, as on Discord.
        let key = channel ^ u64::from(bucket == SEND_BUCKET);
        match state.take(token, key, now) {
            Some((remaining, reset_after)) => with_limits(answer, bucket, remaining, reset_after),
            None => answer,
        }
    } else if let Some(channel) = path
        .strip_prefix("/api/v10/channels/")
        .and_then(|rest| rest.strip_suffix("/typing"))
    {
        let mut done = Response::new(Full::new(Bytes::new()));
        *done.status_mut() = hyper::StatusCode::NO_CONTENT;
        match state.take(token, channel.parse::<u64>().unwrap_or(0) ^ 2, now) {
            Some((remaining, reset_after)) => with_limits(done, TYPING_BUCKET, remaining, reset_after),
            None => done,
        }
    } else {
        let mut response = json(Bytes::from_static(br#"{"message":"404: Not Found","code":0}"#));
        *response.status_mut() = hyper::StatusCode::NOT_FOUND;
        response
    };
    Ok(response)
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let port: u16 = arg("--port").and_then(|p| p.parse().ok()).unwrap_or(0);
    let threads: usize = arg("--threads").and_then(|p| p.parse().ok()).unwrap_or(1);
    let latency = Duration::from_millis(arg("--latency-ms").and_then(|p| p.parse().ok()).unwrap_or(0));
    let headers = !std::env::args().any(|a| a == "--no-ratelimit-headers");
    let buckets = headers.then(|| (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect());
    let state = Arc::new(State {
        page: page(),
        sent: Bytes::from(message(PAGE_MESSAGES)),
        latency,
        served: AtomicU64::new(0),
        buckets,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await.expect("bind");
        println!("bench-upstream listening on http://{}", listener.local_addr().expect("addr"));
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(Arc::clone(&state), request));
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
}
