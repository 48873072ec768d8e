//! Gateway tests: each starts the real binary, connects over a real
//! WebSocket (tungstenite, blocking) and checks one rule of Discord's
//! Gateway. The comment above each test names its source in
//! discord-api-docs @ c98d64bc (`events/gateway.mdx` = GW,
//! `events/gateway-events.mdx` = EV, `topics/opcodes-and-status-codes.mdx`
//! = OC), as summarised with line numbers in `shared/GATEWAY-NOTES.md`.

mod common;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use flate2::{Decompress, FlushDecompress};
use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Error as WsError, Message, WebSocket};

use common::{BOT_A, BOT_B, Body, Fake, TOKEN_A, TOKEN_B};

const G1: &str = "613425648685547541";
const G2: &str = "713425648685547541";
const C1: &str = "613425648685547550";
const C2: &str = "713425648685547550";

const GUILDS: u64 = 1;
const GUILD_MEMBERS: u64 = 1 << 1;
const GUILD_PRESENCES: u64 = 1 << 8;
const GUILD_MESSAGES: u64 = 1 << 9;
const GUILD_MESSAGE_REACTIONS: u64 = 1 << 10;
const GUILD_MESSAGE_TYPING: u64 = 1 << 11;
const MESSAGE_CONTENT: u64 = 1 << 15;

/// Bot A has both default privileged intents and two guilds; bot B has no
/// privileged intent and is in G1 only.
fn world() -> Value {
    json!({
        "bots": [
            {"token": TOKEN_A, "id": BOT_A, "username": "Alpha", "guilds": [G1, G2]},
            {"token": TOKEN_B, "id": BOT_B, "username": "Beta", "guilds": [G1],
             "privileged_intents": []}
        ],
        "guilds": [
            {"id": G1, "name": "One", "member_count": 5,
             "channels": [{"id": C1, "name": "general", "message_count": 3}]},
            {"id": G2, "name": "Two", "member_count": 2,
             "channels": [{"id": C2, "name": "other"}]}
        ]
    })
}

fn start(args: &[&str]) -> Fake {
    let mut all = vec!["--no-ratelimit"];
    all.extend_from_slice(args);
    Fake::with_world(&world(), &all)
}

/// Every test's read deadline.
const WAIT: Duration = Duration::from_secs(5);

/// A minimal blocking Gateway client.
struct Client {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    /// zlib-stream: the connection's inflate context and its buffer.
    zlib: Option<(Decompress, Vec<u8>)>,
}

/// What a read ended with.
#[derive(Debug)]
enum Got {
    Payload(Value),
    Closed(Option<u16>),
    Timeout,
}

impl Client {
    fn connect(url: &str, query: &str) -> Client {
        let (mut ws, _) = tungstenite::connect(format!("{url}/?{query}")).unwrap();
        if let MaybeTlsStream::Plain(s) = ws.get_mut() {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        let zlib = query
            .contains("compress=zlib-stream")
            .then(|| (Decompress::new(true), Vec::new()));
        Client { ws, zlib }
    }

    /// Connects with `v=10&encoding=json` and reads Hello.
    fn hello(url: &str) -> (Client, Value) {
        let mut c = Client::connect(url, "v=10&encoding=json");
        let hello = c.next();
        assert_eq!(hello["op"], 10, "{hello}");
        (c, hello)
    }

    fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).unwrap();
    }

    fn read(&mut self, wait: Duration) -> Got {
        let until = Instant::now() + wait;
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Got::Payload(serde_json::from_str(&t).unwrap()),
                Ok(Message::Binary(b)) => {
                    let (z, buf) = self.zlib.as_mut().expect("binary only with zlib-stream");
                    buf.extend_from_slice(&b);
                    if !buf.ends_with(&[0, 0, 0xff, 0xff]) {
                        continue;
                    }
                    let mut out = Vec::with_capacity(buf.len() * 8 + 1024);
                    let start = z.total_in();
                    loop {
                        let done = (z.total_in() - start) as usize;
                        z.decompress_vec(&buf[done..], &mut out, FlushDecompress::Sync)
                            .unwrap();
                        if (z.total_in() - start) as usize == buf.len()
                            && out.len() < out.capacity()
                        {
                            break;
                        }
                        out.reserve(out.capacity());
                    }
                    buf.clear();
                    return Got::Payload(serde_json::from_slice(&out).unwrap());
                }
                Ok(Message::Close(f)) => {
                    // Send the close reply now, so the server is not left
                    // waiting for it.
                    let _ = self.ws.flush();
                    return Got::Closed(f.map(|f| u16::from(f.code)));
                }
                Ok(_) => {}
                Err(WsError::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    if Instant::now() >= until {
                        return Got::Timeout;
                    }
                }
                Err(_) => return Got::Closed(None),
            }
        }
    }

    /// The next payload; panics on a close or a timeout.
    fn next(&mut self) -> Value {
        match self.read(WAIT) {
            Got::Payload(v) => v,
            other => panic!("expected a payload, got {other:?}"),
        }
    }

    /// The next dispatch (op 0), skipping heartbeat ACKs.
    fn dispatch(&mut self) -> Value {
        loop {
            let v = self.next();
            if v["op"] == 0 {
                return v;
            }
            assert_eq!(v["op"], 11, "unexpected payload {v}");
        }
    }

    /// The close code the server closes with, skipping payloads.
    fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.read(WAIT) {
                Got::Payload(_) => {}
                Got::Closed(code) => return code,
                Got::Timeout => panic!("the server did not close"),
            }
        }
    }

    /// Nothing arrives within `wait` (except heartbeat ACKs).
    fn quiet(&mut self, wait: Duration) {
        loop {
            match self.read(wait) {
                Got::Timeout => return,
                Got::Payload(v) if v["op"] == 11 => {}
                other => panic!("expected silence, got {other:?}"),
            }
        }
    }

    fn identify(&mut self, token: &str, intents: u64, shard: Option<[u32; 2]>) {
        let mut d = json!({
            "token": token,
            "intents": intents,
            "properties": {"os": "linux", "browser": "test", "device": "test"},
        });
        if let Some(s) = shard {
            d["shard"] = json!(s);
        }
        self.send(json!({"op": 2, "d": d}));
    }

    /// Identifies and returns READY.
    fn ready(&mut self, token: &str, intents: u64, shard: Option<[u32; 2]>) -> Value {
        self.identify(token, intents, shard);
        let ready = self.dispatch();
        assert_eq!(ready["t"], "READY", "{ready}");
        ready
    }

    fn close(&mut self, code: u16) {
        let frame = tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: "".into(),
        };
        let _ = self.ws.close(Some(frame));
        let until = Instant::now() + WAIT;
        while Instant::now() < until {
            match self.ws.read() {
                Err(WsError::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

impl Fake {
    /// `url` of `GET /gateway/bot` as bot A.
    fn gateway_url(&self) -> String {
        let r = self.a("/gateway/bot");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["url"].as_str().unwrap().to_string()
    }

    fn gw_stats(&self) -> Value {
        self.control_get("/_fake/gateway/stats")
    }

    fn command(&self, body: Value) -> Value {
        let r = self.control_post("/_fake/gateway/command", body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    /// Waits until the stats say `pred`, or panics.
    fn wait_stats(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + WAIT;
        loop {
            let s = self.gw_stats();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < until, "stats never matched: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

// GW "Get Gateway", "Get Gateway Bot" (L717-779); application.mdx L160-167.
#[test]
fn rest_routes_describe_the_gateway_and_the_intents() {
    let fake = start(&[]);
    let bot = fake.a("/gateway/bot").json();
    let url = bot["url"].as_str().unwrap();
    assert!(url.starts_with("ws://127.0.0.1:"), "{bot}");
    assert_eq!(bot["shards"], 1);
    assert_eq!(
        bot["session_start_limit"],
        json!({"total": 1000, "remaining": 1000, "reset_after": 86_400_000, "max_concurrency": 1})
    );
    // No auth needed for /gateway; /gateway/bot needs it.
    let open = fake.get("/gateway", None);
    assert_eq!(open.status, 200);
    assert_eq!(open.json(), json!({"url": url}));
    assert_eq!(fake.get("/gateway/bot", None).status, 401);
    // GATEWAY_GUILD_MEMBERS_LIMITED | GATEWAY_MESSAGE_CONTENT_LIMITED.
    let app = fake.a("/applications/@me").json();
    assert_eq!(app["id"], BOT_A);
    assert_eq!(app["flags"], (1 << 15) | (1 << 19));
    assert_eq!(app["bot"]["id"], BOT_A);
    let b = fake.get("/applications/@me", Some(TOKEN_B)).json();
    assert_eq!(b["flags"], 0);
}

// GW "Connection Lifecycle" steps 2-5; EV "Hello", "Ready" (L458-475),
// "Guild Create" (L726-762); GW "Sharding" (L612-633).
#[test]
fn hello_identify_ready_then_guild_creates() {
    let fake = start(&["--gateway-heartbeat-ms", "500"]);
    let url = fake.gateway_url();
    let (mut c, hello) = Client::hello(&url);
    assert_eq!(
        hello,
        json!({"op": 10, "d": {"heartbeat_interval": 500}, "s": null, "t": null})
    );
    let ready = c.ready(TOKEN_A, GUILDS | GUILD_MESSAGES, None);
    assert_eq!(ready["s"], 1);
    let d = &ready["d"];
    assert_eq!(d["v"], 10);
    assert_eq!(d["user"]["id"], BOT_A);
    assert_eq!(
        d["guilds"],
        json!([{"id": G1, "unavailable": true}, {"id": G2, "unavailable": true}])
    );
    assert_eq!(d["session_id"].as_str().unwrap().len(), 32);
    let resume = d["resume_gateway_url"].as_str().unwrap();
    assert!(
        resume.starts_with("ws://127.0.0.1:") && resume != url,
        "{resume}"
    );
    assert_eq!(
        d["application"],
        json!({"id": BOT_A, "flags": (1 << 15) | (1 << 19)})
    );
    assert!(d.get("shard").is_none());
    for (s, g) in [(2, G1), (3, G2)] {
        let gc = c.dispatch();
        assert_eq!(
            (gc["t"].as_str(), gc["s"].as_u64()),
            (Some("GUILD_CREATE"), Some(s))
        );
        assert_eq!(gc["d"]["id"], g);
        assert_eq!(gc["d"]["unavailable"], false);
        assert_eq!(gc["d"]["members"][0]["user"]["id"], BOT_A);
    }
    // Heartbeat to stay alive past the interval.
    c.send(json!({"op": 1, "d": 3}));
    assert_eq!(c.next()["op"], 11);

    // Sharded: each shard gets only its guilds; READY echoes `shard`.
    let shard_of = |g: &str| (g.parse::<u64>().unwrap() >> 22) % 2;
    for shard in 0..2u32 {
        std::thread::sleep(Duration::from_millis(5100));
        let (mut c, _) = Client::hello(&url);
        let ready = c.ready(TOKEN_A, GUILDS, Some([shard, 2]));
        assert_eq!(ready["d"]["shard"], json!([shard, 2]));
        let expected: Vec<&str> = [G1, G2]
            .into_iter()
            .filter(|g| shard_of(g) == u64::from(shard))
            .collect();
        let listed: Vec<&str> = ready["d"]["guilds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, expected);
    }
}

// GW "Sending Heartbeats" (L146-175): op 1 → op 11; op 1 from the server
// asks for a heartbeat now; zombie mode stops ACKs.
#[test]
fn heartbeats_are_acked_requested_and_can_go_unanswered() {
    let fake = start(&[]);
    let url = fake.gateway_url();
    let (mut c, _) = Client::hello(&url);
    c.send(json!({"op": 1, "d": null}));
    assert_eq!(c.next(), json!({"op": 11, "d": null, "s": null, "t": null}));
    c.ready(TOKEN_A, GUILDS, None);
    for _ in 0..2 {
        assert_eq!(c.dispatch()["t"], "GUILD_CREATE");
    }
    c.send(json!({"op": 1, "d": 3}));
    assert_eq!(c.next()["op"], 11);
    let r = fake.command(json!({"action": "request_heartbeat", "bot_id": BOT_A}));
    assert_eq!(r["connections"], 1);
    assert_eq!(c.next(), json!({"op": 1, "d": null, "s": null, "t": null}));
    fake.command(json!({"action": "zombie", "token": TOKEN_A, "on": true}));
    c.send(json!({"op": 1, "d": 3}));
    c.quiet(Duration::from_millis(300));
    let stats = fake.gw_stats();
    assert_eq!(stats["bots"][BOT_A]["heartbeats"], 2);
    assert_eq!(stats["bots"][BOT_A]["heartbeat_acks"], 1);
    assert_eq!(stats["connections"][0]["last_heartbeat_d"], 3);
    assert_eq!(stats["connections"][0]["last_s"], 3);
    assert_eq!(stats["connections"][0]["zombie"], true);
    fake.command(json!({"action": "zombie", "token": TOKEN_A, "on": false}));
    c.send(json!({"op": 1, "d": 3}));
    assert_eq!(c.next()["op"], 11);
}

// GW "If your app fails to send a heartbeat event in time, your connection
// will be closed and you will be forced to Resume" (L146).
#[test]
fn a_missed_heartbeat_closes_the_connection() {
    let fake = start(&["--gateway-heartbeat-ms", "200"]);
    let (mut c, _) = Client::hello(&fake.gateway_url());
    let started = Instant::now();
    assert_eq!(c.close_code(), Some(4000));
    assert!(started.elapsed() >= Duration::from_millis(1200));
}

// GW "Resuming" (L241-265): replay after `seq`, in order, then RESUMED, on
// resume_gateway_url; a client close other than 1000/1001 keeps the session.
#[test]
fn resume_replays_missed_events_then_resumed() {
    let fake = start(&[]);
    let url = fake.gateway_url();
    let (mut c, _) = Client::hello(&url);
    let ready = c.ready(TOKEN_A, GUILD_MESSAGES | MESSAGE_CONTENT, None);
    let sid = ready["d"]["session_id"].as_str().unwrap().to_string();
    let resume_url = ready["d"]["resume_gateway_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(resume_url, url);
    c.close(4000);
    fake.wait_stats(|s| s["connections_open"] == 0);
    let sent: Vec<String> = (0..3)
        .map(|i| {
            let r = fake.send(C1, json!({"content": format!("missed {i}")}));
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["id"].as_str().unwrap().to_string()
        })
        .collect();

    let mut r = Client::connect(&resume_url, "v=10&encoding=json");
    assert_eq!(r.next()["op"], 10);
    r.send(json!({"op": 6, "d": {"token": TOKEN_A, "session_id": sid, "seq": 1}}));
    for (i, id) in sent.iter().enumerate() {
        let m = r.dispatch();
        assert_eq!(m["t"], "MESSAGE_CREATE");
        assert_eq!(m["s"], i as u64 + 2);
        assert_eq!(&m["d"]["id"], id);
        assert_eq!(m["d"]["guild_id"], G1);
        assert_eq!(m["d"]["content"], format!("missed {i}"));
    }
    let resumed = r.dispatch();
    assert_eq!(
        (resumed["t"].as_str(), resumed["s"].as_u64()),
        (Some("RESUMED"), Some(5))
    );
    // Live events continue the same sequence.
    fake.send(C1, json!({"content": "live"}));
    assert_eq!(r.dispatch()["s"], 6);
    let stats = fake.gw_stats();
    assert_eq!(stats["bots"][BOT_A]["identifies"], 1);
    assert_eq!(stats["bots"][BOT_A]["resumes"], 1);
    assert_eq!(stats["bots"][BOT_A]["resumes_via_resume_url"], 1);
    assert_eq!(stats["bots"][BOT_A]["close_codes_received"], json!([4000]));

    // A seq beyond the last dispatch closes 4007 (OC).
    r.close(4000);
    let mut bad = Client::connect(&resume_url, "v=10&encoding=json");
    bad.next();
    bad.send(json!({"op": 6, "d": {"token": TOKEN_A, "session_id": sid, "seq": 99}}));
    assert_eq!(bad.close_code(), Some(4007));
}

// GW "Initiating a Disconnect" (L240): closing with 1000 invalidates the
// session; EV "Invalid Session" (L495-513): an unknown session gets op 9
// false.
#[test]
fn a_1000_close_or_an_unknown_session_cannot_be_resumed() {
    let fake = start(&[]);
    let url = fake.gateway_url();
    let (mut c, _) = Client::hello(&url);
    let sid = c.ready(TOKEN_A, GUILD_MESSAGES, None)["d"]["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    c.close(1000);
    fake.wait_stats(|s| s["connections_open"] == 0);
    for session in [sid.as_str(), "no-such-session"] {
        let (mut r, _) = Client::hello(&url);
        r.send(json!({"op": 6, "d": {"token": TOKEN_A, "session_id": session, "seq": 1}}));
        assert_eq!(r.next(), json!({"op": 9, "d": false, "s": null, "t": null}));
    }
    assert_eq!(fake.gw_stats()["bots"][BOT_A]["resumes_failed"], 2);
}

// EV "Invalid Session": `d` tells whether the session may be resumed;
// GW L253 (resume after d:true) and L271 (identify after d:false).
#[test]
fn invalid_session_both_kinds() {
    let fake = start(&[]);
    let url = fake.gateway_url();
    let (mut c, _) = Client::hello(&url);
    let sid = c.ready(TOKEN_A, GUILD_MESSAGES, None)["d"]["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = fake.command(json!({"action": "invalid_session", "bot_id": BOT_A, "resumable": true}));
    assert_eq!(r["connections"], 1);
    assert_eq!(c.next(), json!({"op": 9, "d": true, "s": null, "t": null}));
    // Resumable: a RESUME (here on the same socket) works.
    c.send(json!({"op": 6, "d": {"token": TOKEN_A, "session_id": sid, "seq": 1}}));
    assert_eq!(c.dispatch()["t"], "RESUMED");
    fake.command(json!({"action": "invalid_session", "bot_id": BOT_A, "resumable": false}));
    assert_eq!(c.next()["d"], false);
    c.send(json!({"op": 6, "d": {"token": TOKEN_A, "session_id": sid, "seq": 2}}));
    assert_eq!(c.next()["d"], false);
    // A new IDENTIFY is the way out (after the 5 s identify window).
    std::thread::sleep(Duration::from_millis(5100));
    c.ready(TOKEN_A, GUILD_MESSAGES, None);
}

// EV "Reconnect" (L479-491): op 7 at any time, even in place of Hello; the
// server may close a few seconds later.
#[test]
fn reconnect_mid_stream_and_before_hello() {
    let fake = start(&[]);
    let url = fake.gateway_url();
    let (mut c, _) = Client::hello(&url);
    c.ready(TOKEN_A, GUILD_MESSAGES, None);
    fake.command(json!({"action": "reconnect", "bot_id": BOT_A}));
    assert_eq!(c.next(), json!({"op": 7, "d": null, "s": null, "t": null}));

    let armed = fake.command(json!({"action": "reconnect_before_hello", "count": 1}));
    assert_eq!(armed["armed"], 1);
    let mut early = Client::connect(&url, "v=10&encoding=json");
    assert_eq!(early.next()["op"], 7);
    early.close(4000);
    // Only the next connection was armed.
    let (_again, hello) = Client::hello(&url);
    assert_eq!(hello["op"], 10);
}

// OC "Gateway Close Event Codes" (L36-51): each code can be sent on demand.
#[test]
fn every_close_code_on_demand() {
    let fake = start(&[]);
    let url = fake.gateway_url();
    for code in [
        4000, 4001, 4002, 4003, 4004, 4005, 4007, 4008, 4009, 4010, 4011, 4012, 4013, 4014,
    ] {
        let (mut c, _) = Client::hello(&url);
        let r = fake.command(json!({"action": "close", "code": code}));
        assert_eq!(r["connections"], 1, "{code}");
        assert_eq!(c.close_code(), Some(code));
        fake.wait_stats(|s| s["connections_open"] == 0);
    }
    let closes = fake.gw_stats()["closes"].as_array().unwrap().len();
    assert_eq!(closes, 14);
}

// OC 4001-4005, 4010-4013; GW L52 (4096 bytes), L302 (intents).
#[test]
fn protocol_violations_close_with_their_codes() {
    let fake = start(&["--gateway-guilds-per-shard", "1"]);
    let url = fake.gateway_url();
    let base = json!({"token": TOKEN_B, "intents": GUILDS,
                      "properties": {"os": "l", "browser": "b", "device": "d"}});
    let with = |k: &str, v: Value| {
        let mut d = base.clone();
        d[k] = v;
        json!({"op": 2, "d": d})
    };
    let cases = [
        (json!({"op": 99, "d": null}), 4001),
        (json!({"op": 3, "d": {"status": "online"}}), 4003),
        (with("token", json!("wrong-token")), 4004),
        (with("intents", json!(1u64 << 17)), 4013),
        (with("intents", Value::Null), 4013),
        (with("shard", json!([2, 2])), 4010),
        (with("shard", json!([0, 0])), 4010),
        (json!({"op": 1, "d": "x"}), 4001),
    ];
    for (payload, code) in cases {
        let (mut c, _) = Client::hello(&url);
        c.send(payload.clone());
        assert_eq!(c.close_code(), Some(code), "{payload}");
    }
    let (mut c, _) = Client::hello(&url);
    c.ws.send(Message::text("{not json")).unwrap();
    assert_eq!(c.close_code(), Some(4002));
    // Bot A has two guilds; one shard may hold one here.
    let (mut c, _) = Client::hello(&url);
    c.identify(TOKEN_A, GUILDS, None);
    assert_eq!(c.close_code(), Some(4011));
    // A second IDENTIFY on an authenticated connection.
    let (mut c, _) = Client::hello(&url);
    c.ready(TOKEN_B, GUILDS, None);
    c.identify(TOKEN_B, GUILDS, None);
    assert_eq!(c.close_code(), Some(4005));
    // v other than 10: 4012, before Hello.
    let mut c = Client::connect(&url, "v=9&encoding=json");
    assert_eq!(c.close_code(), Some(4012));
}

// GW "Gateway Restrictions" (L471): a privileged intent not enabled → 4014.
#[test]
fn privileged_intents_not_enabled_close_4014() {
    let fake = start(&[]);
    let url = fake.gateway_url();
    for (token, intents) in [
        (TOKEN_B, GUILDS | MESSAGE_CONTENT),
        (TOKEN_B, GUILD_MEMBERS),
        (TOKEN_A, GUILD_PRESENCES),
    ] {
        let (mut c, _) = Client::hello(&url);
        c.identify(token, intents, None);
        assert_eq!(c.close_code(), Some(4014), "{token} {intents}");
    }
    let stats = fake.gw_stats();
    assert_eq!(
        stats["bots"][BOT_B]["close_codes_sent"],
        json!([4014, 4014])
    );
    assert_eq!(stats["bots"][BOT_B]["identifies"], 0);
    assert_eq!(stats["bots"][BOT_B]["identify_attempts"], 2);
}

// GW "Max Concurrency" (L644-647) and "Rate Limiting" (L509): one IDENTIFY
// per bucket `shard_id % max_concurrency` per 5 s; more gets op 9.
#[test]
fn identify_concurrency_per_bucket() {
    let fake = start(&[]);
    let url = fake.gateway_url();
    let (mut a, _) = Client::hello(&url);
    a.ready(TOKEN_A, GUILDS, Some([0, 2]));
    let (mut b, _) = Client::hello(&url);
    b.identify(TOKEN_A, GUILDS, Some([1, 2]));
    assert_eq!(b.next(), json!({"op": 9, "d": false, "s": null, "t": null}));
    // Limits are per bot: bot B is not held back by bot A.
    let (mut other, _) = Client::hello(&url);
    other.ready(TOKEN_B, GUILDS, None);
    assert_eq!(fake.gw_stats()["bots"][BOT_A]["identifies_refused"], 1);

    let fake = start(&["--gateway-max-concurrency", "2"]);
    let url = fake.gateway_url();
    let (mut s0, _) = Client::hello(&url);
    s0.ready(TOKEN_A, GUILDS, Some([0, 2]));
    let (mut s1, _) = Client::hello(&url);
    s1.ready(TOKEN_A, GUILDS, Some([1, 2]));
    let (mut again, _) = Client::hello(&url);
    again.identify(TOKEN_A, GUILDS, Some([0, 2]));
    assert_eq!(again.next()["op"], 9);
}

// GW L188 and "Session Start Limit Object" (L770-779): each IDENTIFY uses a
// session start; RESUME does not; at the limit the sessions end and the
// token is reset.
#[test]
fn session_starts_count_down_and_run_out() {
    let fake = start(&[
        "--gateway-session-total",
        "2",
        "--gateway-max-concurrency",
        "4",
    ]);
    let url = fake.gateway_url();
    let remaining = || fake.a("/gateway/bot").json()["session_start_limit"]["remaining"].clone();
    assert_eq!(remaining(), 2);
    let (mut a, _) = Client::hello(&url);
    a.ready(TOKEN_A, GUILDS, Some([0, 4]));
    assert_eq!(remaining(), 1);
    let limit = fake.a("/gateway/bot").json()["session_start_limit"].clone();
    assert!(limit["reset_after"].as_u64().unwrap() <= 86_400_000);
    let (mut b, _) = Client::hello(&url);
    b.ready(TOKEN_A, GUILDS, Some([1, 4]));
    assert_eq!(remaining(), 0);
    let (mut c, _) = Client::hello(&url);
    c.identify(TOKEN_A, GUILDS, Some([2, 4]));
    assert_eq!(c.close_code(), Some(4004));
    assert_eq!(a.close_code(), Some(4004));
    assert_eq!(b.close_code(), Some(4004));
    assert_eq!(fake.a("/users/@me").status, 401);
}

// GW "Sending Events" (L52): over 4096 bytes closes 4002.
#[test]
fn payloads_over_4096_bytes_close_4002() {
    let fake = start(&[]);
    let url = fake.gateway_url();
    let (mut c, _) = Client::hello(&url);
    c.ready(TOKEN_A, GUILD_MESSAGES, None);
    let mut fits = json!({"op": 3, "d": {"status": "online", "afk": false, "since": null,
                                          "activities": [{"name": "", "type": 0}]}});
    let pad = 4096 - fits.to_string().len();
    fits["d"]["activities"][0]["name"] = json!("x".repeat(pad));
    assert_eq!(fits.to_string().len(), 4096);
    c.send(fits.clone());
    c.quiet(Duration::from_millis(200));
    fits["d"]["activities"][0]["name"] = json!("x".repeat(pad + 1));
    c.send(fits);
    assert_eq!(c.close_code(), Some(4002));
}

// GW "Rate Limiting" (L507): 120 payloads per connection per 60 s; the
// 121st disconnects (4008).
#[test]
fn the_121st_payload_in_a_minute_closes_4008() {
    let fake = start(&[]);
    let (mut c, _) = Client::hello(&fake.gateway_url());
    for _ in 0..120 {
        c.send(json!({"op": 1, "d": null}));
    }
    for _ in 0..120 {
        assert_eq!(c.next()["op"], 11);
    }
    c.send(json!({"op": 1, "d": null}));
    assert_eq!(c.close_code(), Some(4008));
}

// GW "zlib-stream" (L547-551): one context per connection, every message
// ends with 00 00 ff ff.
#[test]
fn zlib_stream_round_trip() {
    let fake = start(&[]);
    let url = fake.gateway_url();
    let mut c = Client::connect(&url, "v=10&encoding=json&compress=zlib-stream");
    let hello = c.next();
    assert_eq!(hello["op"], 10);
    let ready = c.ready(TOKEN_A, GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT, None);
    assert_eq!(ready["d"]["user"]["id"], BOT_A);
    for _ in 0..2 {
        assert_eq!(c.dispatch()["t"], "GUILD_CREATE");
    }
    for i in 0..3 {
        fake.send(C1, json!({"content": format!("z{i}")}));
        assert_eq!(c.dispatch()["d"]["content"], format!("z{i}"));
    }
    assert_eq!(fake.gw_stats()["connections"][0]["compress"], "zlib-stream");
}

// EV "Message Create" (L1122-1134) and the other message events: REST
// writes produce dispatches with increasing `s`.
#[test]
fn rest_writes_produce_dispatches_in_order() {
    let fake = start(&[]);
    let url = fake.gateway_url();
    let (mut c, _) = Client::hello(&url);
    let intents = GUILD_MESSAGES | MESSAGE_CONTENT | GUILD_MESSAGE_REACTIONS | GUILD_MESSAGE_TYPING;
    c.ready(TOKEN_A, intents, None);
    let m1 = fake.send(C1, json!({"content": "one"})).json();
    let m2 = fake.send(C1, json!({"content": "two"})).json();
    let e1 = c.dispatch();
    let e2 = c.dispatch();
    assert_eq!((e1["s"].as_u64(), e2["s"].as_u64()), (Some(2), Some(3)));
    assert_eq!(e1["t"], "MESSAGE_CREATE");
    assert_eq!(e1["d"]["id"], m1["id"]);
    assert_eq!(e1["d"]["guild_id"], G1);
    assert_eq!(e1["d"]["channel_type"], 0);
    assert!(e1["d"]["member"]["joined_at"].is_string());
    assert_eq!(e2["d"]["content"], "two");
    let id2 = m2["id"].as_str().unwrap();

    let edit = fake.call(
        "PATCH",
        &format!("/channels/{C1}/messages/{id2}"),
        Body::Json(json!({"content": "two!"})),
    );
    assert_eq!(edit.status, 200, "{}", edit.body);
    let up = c.dispatch();
    assert_eq!(
        (up["t"].as_str(), up["d"]["content"].as_str()),
        (Some("MESSAGE_UPDATE"), Some("two!"))
    );
    let put = fake.call(
        "PUT",
        &format!("/channels/{C1}/messages/{id2}/reactions/%F0%9F%91%8D/@me"),
        Body::None,
    );
    assert_eq!(put.status, 204);
    let add = c.dispatch();
    assert_eq!(add["t"], "MESSAGE_REACTION_ADD");
    assert_eq!(add["d"]["emoji"], json!({"id": null, "name": "👍"}));
    assert_eq!(add["d"]["user_id"], BOT_A);
    assert_eq!(add["d"]["message_author_id"], BOT_A);
    fake.call(
        "DELETE",
        &format!("/channels/{C1}/messages/{id2}/reactions/%F0%9F%91%8D/@me"),
        Body::None,
    );
    assert_eq!(c.dispatch()["t"], "MESSAGE_REACTION_REMOVE");
    fake.call("POST", &format!("/channels/{C1}/typing"), Body::None);
    let typing = c.dispatch();
    assert_eq!(typing["t"], "TYPING_START");
    assert_eq!(typing["d"]["user_id"], BOT_A);
    fake.call(
        "DELETE",
        &format!("/channels/{C1}/messages/{id2}"),
        Body::None,
    );
    let del = c.dispatch();
    assert_eq!(del["t"], "MESSAGE_DELETE");
    assert_eq!(
        del["d"],
        json!({"id": id2, "channel_id": C1, "guild_id": G1})
    );
    let m3 = fake.send(C1, json!({"content": "three"})).json();
    c.dispatch();
    let bulk = fake.call(
        "POST",
        &format!("/channels/{C1}/messages/bulk-delete"),
        Body::Json(json!({"messages": [m1["id"], m3["id"]]})),
    );
    assert_eq!(bulk.status, 204, "{}", bulk.body);
    let b = c.dispatch();
    assert_eq!(b["t"], "MESSAGE_DELETE_BULK");
    assert_eq!(b["d"]["ids"], json!([m1["id"], m3["id"]]));
    assert_eq!(b["s"], 10);
}

// GW "List of Intents": an event whose intent was not sent is not
// dispatched; "Message Content Intent" (L485-500): without it, content is
// empty except the bot's own messages and mentions of it.
#[test]
fn intents_filter_events_and_message_content() {
    let fake = start(&[]);
    let url = fake.gateway_url();
    // Bot B has no MESSAGE_CONTENT; it asks only for GUILD_MESSAGES.
    let (mut b, _) = Client::hello(&url);
    b.ready(TOKEN_B, GUILD_MESSAGES, None);
    // Bot A asks for GUILD_MESSAGES without MESSAGE_CONTENT either.
    let (mut a, _) = Client::hello(&url);
    a.ready(TOKEN_A, GUILD_MESSAGES, None);
    fake.send(C1, json!({"content": "secret", "embeds": [{"title": "t"}]}));
    let seen_b = b.dispatch();
    assert_eq!(seen_b["t"], "MESSAGE_CREATE");
    assert_eq!(seen_b["d"]["content"], "");
    assert_eq!(seen_b["d"]["embeds"], json!([]));
    let own = a.dispatch();
    assert_eq!(own["d"]["content"], "secret");
    fake.send(C1, json!({"content": format!("hey <@{BOT_B}>")}));
    assert_eq!(b.dispatch()["d"]["content"], format!("hey <@{BOT_B}>"));
    a.dispatch();
    // Typing and reactions: not subscribed, not sent.
    fake.call("POST", &format!("/channels/{C1}/typing"), Body::None);
    b.quiet(Duration::from_millis(200));
    a.quiet(Duration::from_millis(10));
}

// The control API's injected dispatches follow the same routing and
// intents; a burst arrives in order.
#[test]
fn injected_dispatches_and_bursts() {
    let fake = start(&[]);
    let url = fake.gateway_url();
    let (mut c, _) = Client::hello(&url);
    c.ready(TOKEN_A, GUILD_MESSAGES, None);
    let member = json!({"guild_id": G1, "user": {"id": "5"}, "roles": []});
    let r = fake.control_post(
        "/_fake/gateway/dispatch",
        json!({"bot_id": BOT_A, "t": "GUILD_MEMBER_ADD", "d": member}),
    );
    assert_eq!(r.json(), json!({"dispatched": 0, "count": 1}));
    let r = fake.control_post(
        "/_fake/gateway/dispatch",
        json!({"token": TOKEN_A, "t": "INTERACTION_CREATE", "d": {"id": "1"}, "count": 1000}),
    );
    assert_eq!(r.json(), json!({"dispatched": 1000, "count": 1000}));
    for s in 2..1002 {
        let e = c.dispatch();
        assert_eq!(
            (e["t"].as_str(), e["s"].as_u64()),
            (Some("INTERACTION_CREATE"), Some(s))
        );
    }
    let r = fake.control_post("/_fake/gateway/dispatch", json!({"t": "X"}));
    assert_eq!(r.status, 400);
    let r = fake.control_post("/_fake/gateway/dispatch", json!({"bot_id": "1", "t": "X"}));
    assert_eq!(r.status, 404);
    assert_eq!(fake.gw_stats()["bots"][BOT_A]["dispatches"], 1001);
}

// GW L485-500: DMs keep their content without MESSAGE_CONTENT; EV "Messages"
// and GW "List of Intents": DM messages need DIRECT_MESSAGES and go to
// shard 0.
#[test]
fn dm_messages_need_direct_messages_and_keep_content() {
    const DIRECT_MESSAGES: u64 = 1 << 12;
    let fake = start(&[]);
    let url = fake.gateway_url();
    let (mut guild_only, _) = Client::hello(&url);
    guild_only.ready(TOKEN_B, GUILD_MESSAGES, None);
    let dm = json!({"id": "9", "channel_id": "8", "author": {"id": "7"}, "content": "psst",
                    "mentions": [], "embeds": [], "attachments": [], "components": []});
    let inject = || {
        fake.control_post(
            "/_fake/gateway/dispatch",
            json!({"bot_id": BOT_B, "t": "MESSAGE_CREATE", "d": dm}),
        )
        .json()["dispatched"]
            .clone()
    };
    assert_eq!(inject(), 0);
    guild_only.close(4000);
    std::thread::sleep(Duration::from_millis(5100));
    let (mut c, _) = Client::hello(&url);
    c.ready(TOKEN_B, DIRECT_MESSAGES, None);
    assert_eq!(inject(), 1);
    assert_eq!(c.dispatch()["d"]["content"], "psst");
}

// gateway.mdx L259: the resume URL is a separate listener a test can take
// down, to check that a client falls back to the base URL.
#[test]
fn the_resume_listener_can_be_taken_down() {
    let fake = start(&[]);
    let url = fake.gateway_url();
    let (mut c, _) = Client::hello(&url);
    let resume_url = c.ready(TOKEN_A, GUILDS, None)["d"]["resume_gateway_url"]
        .as_str()
        .unwrap()
        .to_string();
    fake.command(json!({"action": "resume_url", "up": false}));
    let attempt = tungstenite::connect(format!("{resume_url}/?v=10&encoding=json"));
    assert!(attempt.is_err());
    fake.command(json!({"action": "resume_url", "up": true}));
    let (_c2, hello) = Client::hello(&resume_url);
    assert_eq!(hello["op"], 10);
}
