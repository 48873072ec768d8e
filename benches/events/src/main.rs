//! bench-events: the client side of `make bench-events` (benches/bench.py
//! runs it; benches/RESULTS.md has the numbers).
//!
//! It opens many `GET /api/events` streams on the service and reads all of
//! them from one epoll loop, stamping each read with the wall clock (the
//! clock tcpdump stamps packets with), and injects events into the fake
//! Discord through `POST /_fake/gateway/dispatch` from a second thread. Each
//! event carries its number and its injection time in `d.nonce`, which the
//! service passes on unchanged.
//!
//! Why one loop and not a thread per stream: on 2 cores, 1,000 reader
//! threads woken for each event would measure the scheduler, and their
//! wake-ups would be charged to the service's latency.
//!
//! Modes:
//! - `hold`: open the streams, print `ready N` once each has its `retry:`
//!   line, hold them until a line (or EOF) on stdin, then close them;
//! - `latency`: events one at a time, each to one bot in turn, the next
//!   once every stream of that bot has read it (or after 2 s); writes every
//!   injection and every read to `--out` for bench.py to match with the
//!   packets tcpdump saw leave the fake;
//! - `fanout`: `--rate` events per second for `--seconds`, `--burst` events
//!   per request, bots in turn; prints the frames read, the service's CPU
//!   ticks over the run and an idle stretch before it, and the injection
//!   to read latencies.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Socket, Type};

fn main() {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("bench-events: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("bench-events: {e}");
        std::process::exit(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Hold,
    Latency,
    Fanout,
}

struct Args {
    /// `hold`, or `latency` and/or `fanout` in the order given
    /// (`latency,fanout`): one set of streams for all of them.
    phases: Vec<Mode>,
    /// Before the first phase, print `ready N MS`, and between phases
    /// `done PHASE`, then wait for a line on stdin: bench.py waits for
    /// every bot's Gateway first, and stops tcpdump after `latency`.
    step: bool,
    service: SocketAddr,
    fake: SocketAddr,
    /// Lines of `SESSION BOT_ID`: one stream each.
    streams: String,
    out: Option<String>,
    events: u64,
    rate: u64,
    seconds: f64,
    burst: u64,
    /// Random characters in each event's `content`: makes the event's frame
    /// bigger than any heartbeat ACK on the wire, so bench.py can tell them
    /// apart in tcpdump's capture, and keeps it from compressing to nothing.
    pad: usize,
    /// Streams per loopback source address.
    per_ip: usize,
    pid: Option<u32>,
    idle: f64,
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let phases = it
            .next()
            .unwrap_or_default()
            .split(',')
            .map(|p| match p {
                "hold" => Ok(Mode::Hold),
                "latency" => Ok(Mode::Latency),
                "fanout" => Ok(Mode::Fanout),
                other => Err(format!(
                    "phases hold|latency|fanout expected, got {other:?}"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut args = Args {
            phases,
            step: false,
            service: "127.0.0.1:3000".parse().unwrap(),
            fake: "127.0.0.1:3001".parse().unwrap(),
            streams: String::new(),
            out: None,
            events: 1000,
            rate: 10_000,
            seconds: 10.0,
            burst: 10,
            pad: 600,
            per_ip: 50,
            pid: None,
            idle: 2.0,
        };
        while let Some(flag) = it.next() {
            if flag == "--step" {
                args.step = true;
                continue;
            }
            let value = it.next().ok_or(format!("{flag} needs a value"))?;
            let bad = |_| format!("bad value for {flag}: {value}");
            match flag.as_str() {
                "--service" => args.service = value.parse().map_err(|_| bad(()))?,
                "--fake" => args.fake = value.parse().map_err(|_| bad(()))?,
                "--streams" => args.streams = value,
                "--out" => args.out = Some(value),
                "--events" => args.events = value.parse().map_err(|_| bad(()))?,
                "--rate" => args.rate = value.parse().map_err(|_| bad(()))?,
                "--seconds" => args.seconds = value.parse().map_err(|_| bad(()))?,
                "--burst" => args.burst = value.parse().map_err(|_| bad(()))?,
                "--pad" => args.pad = value.parse().map_err(|_| bad(()))?,
                "--per-ip" => args.per_ip = value.parse().map_err(|_| bad(()))?,
                "--pid" => args.pid = Some(value.parse().map_err(|_| bad(()))?),
                "--idle" => args.idle = value.parse().map_err(|_| bad(()))?,
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        if args.streams.is_empty() {
            return Err("--streams FILE is required".into());
        }
        Ok(args)
    }
}

/// Nanoseconds since the epoch: the clock of tcpdump's timestamps.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(field(11) + field(12))
}

/// One SSE stream and what has been read of it.
struct Stream {
    sock: MioStream,
    bot: u64,
    buf: Vec<u8>,
    head_done: bool,
    ready: bool,
    closed: bool,
}

/// What the reader and the injector share.
#[derive(Default)]
struct Shared {
    ready: AtomicUsize,
    failed: AtomicUsize,
    frames: AtomicU64,
    bench_frames: AtomicU64,
    /// Serial mode: the event in flight and how many of its reads arrived.
    current: Mutex<(u64, usize)>,
    arrived: Condvar,
}

/// A read of one of our events: (event number, stream, read at, sent at).
type Sample = (u64, u32, u64, u64);

fn run(args: &Args) -> Result<(), String> {
    let lines = std::fs::read_to_string(&args.streams).map_err(|e| e.to_string())?;
    let wanted: Vec<(String, u64)> = lines
        .lines()
        .filter_map(|l| {
            let (session, bot) = l.trim().split_once(' ')?;
            Some((session.to_string(), bot.parse().ok()?))
        })
        .collect();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut streams = Vec::with_capacity(wanted.len());
    for (k, (session, bot)) in wanted.iter().enumerate() {
        let sock = open(args, k, session).map_err(|e| format!("stream {k}: {e}"))?;
        let mut sock = MioStream::from_std(sock);
        poll.registry()
            .register(&mut sock, Token(k), Interest::READABLE)
            .map_err(|e| e.to_string())?;
        streams.push(Stream {
            sock,
            bot: *bot,
            buf: Vec::with_capacity(4096),
            head_done: false,
            ready: false,
            closed: false,
        });
    }
    let shared = Arc::new(Shared::default());
    let opened = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    *shared.current.lock().unwrap() = (u64::MAX, 0);
    let mut reader = Reader {
        poll: &mut poll,
        streams: &mut streams,
        shared: &shared,
        samples: &mut samples,
    };
    // Every stream answered with its `retry:` line (or failed).
    while shared.ready.load(Ordering::SeqCst) + shared.failed.load(Ordering::SeqCst)
        < reader.streams.len()
    {
        reader.turn(Duration::from_millis(100))?;
        if opened.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "only {} of {} streams ready after 60 s",
                shared.ready.load(Ordering::SeqCst),
                reader.streams.len()
            ));
        }
    }
    if shared.failed.load(Ordering::SeqCst) > 0 {
        return Err(format!(
            "{} streams were refused",
            shared.failed.load(Ordering::SeqCst)
        ));
    }
    let ready_ms = opened.elapsed().as_secs_f64() * 1000.0;
    let mut per_bot: HashMap<u64, usize> = HashMap::new();
    for s in reader.streams.iter() {
        *per_bot.entry(s.bot).or_default() += 1;
    }
    let mut bots: Vec<u64> = per_bot.keys().copied().collect();
    bots.sort_unstable();
    for (n, phase) in args.phases.iter().enumerate() {
        if args.step && *phase != Mode::Hold {
            match n {
                0 => println!("ready {} {ready_ms:.0}", reader.streams.len()),
                _ => println!("done {:?}", args.phases[n - 1]),
            }
            let _ = io::stdout().flush();
            let mut line = String::new();
            let _ = io::stdin().lock().read_line(&mut line);
        }
        reader.samples.clear();
        match phase {
            Mode::Hold => hold(&mut reader, ready_ms)?,
            Mode::Latency => latency(args, &mut reader, &bots, &per_bot, ready_ms)?,
            Mode::Fanout => fanout(args, &mut reader, &bots, &per_bot)?,
        }
    }
    Ok(())
}

/// Holds the streams open until a line (or EOF) on stdin.
fn hold(reader: &mut Reader<'_>, ready_ms: f64) -> Result<(), String> {
    println!("ready {} {ready_ms:.0}", reader.streams.len());
    let _ = io::stdout().flush();
    let shared = reader.shared;
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = io::stdin().lock().read_line(&mut line);
        stopper.store(true, Ordering::SeqCst);
    });
    while !stop.load(Ordering::SeqCst) {
        reader.turn(Duration::from_millis(100))?;
    }
    for stream in reader.streams.iter_mut() {
        let _ = stream.sock.shutdown(std::net::Shutdown::Both);
    }
    println!("closed {}", shared.frames.load(Ordering::SeqCst));
    Ok(())
}

/// Serial events; every injection and read goes to `--out`.
fn latency(
    args: &Args,
    reader: &mut Reader<'_>,
    bots: &[u64],
    per_bot: &HashMap<u64, usize>,
    ready_ms: f64,
) -> Result<(), String> {
    let path = args.out.as_deref().ok_or("--out FILE is required")?;
    let injections = std::thread::scope(|scope| {
        let shared = reader.shared;
        let injector =
            scope.spawn(|| serial(args.fake, bots, per_bot, args.events, args.pad, shared));
        while !injector.is_finished() {
            reader.turn(Duration::from_millis(20))?;
        }
        injector
            .join()
            .map_err(|_| "the injector panicked".to_string())?
    })?;
    let mut out = String::new();
    for (seq, bot, start, end) in &injections {
        let _ = writeln!(out, "inject {seq} {bot} {start} {end}");
    }
    for (seq, stream, read, sent) in reader.samples.iter() {
        let _ = writeln!(out, "read {seq} {stream} {read} {sent}");
    }
    std::fs::write(path, out).map_err(|e| e.to_string())?;
    println!(
        "{{\"phase\": \"latency\", \"streams\": {}, \"ready_ms\": {ready_ms:.0}, \"events\": {}, \"reads\": {}}}",
        reader.streams.len(),
        injections.len(),
        reader.samples.len()
    );
    Ok(())
}

/// Paced events; prints frames read, the service's CPU and the latencies.
fn fanout(
    args: &Args,
    reader: &mut Reader<'_>,
    bots: &[u64],
    per_bot: &HashMap<u64, usize>,
) -> Result<(), String> {
    let pid = args.pid.ok_or("--pid is required for fanout")?;
    let shared = reader.shared;
    // The service's CPU while nothing is injected: heartbeats, the
    // streams' periodic session checks.
    let idle_start = (cpu_ticks(pid).map_err(|e| e.to_string())?, Instant::now());
    let idle_until = Instant::now() + Duration::from_secs_f64(args.idle);
    while Instant::now() < idle_until {
        reader.turn(Duration::from_millis(50))?;
    }
    let idle = (
        cpu_ticks(pid).map_err(|e| e.to_string())? - idle_start.0,
        idle_start.1.elapsed().as_secs_f64(),
    );
    reader.samples.clear();
    let frames_before = shared.bench_frames.load(Ordering::SeqCst);
    let cpu_before = cpu_ticks(pid).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let (events, requests, inject_secs) = std::thread::scope(|scope| {
        let injector = scope.spawn(|| {
            paced(
                args.fake,
                bots,
                args.rate,
                args.seconds,
                args.burst,
                args.pad,
            )
        });
        while !injector.is_finished() {
            reader.turn(Duration::from_millis(20))?;
        }
        injector
            .join()
            .map_err(|_| "the injector panicked".to_string())?
    })?;
    let expected = events_expected(per_bot, events, requests);
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.bench_frames.load(Ordering::SeqCst) - frames_before < expected
        && Instant::now() < deadline
    {
        reader.turn(Duration::from_millis(20))?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_ticks(pid).map_err(|e| e.to_string())? - cpu_before;
    let frames = shared.bench_frames.load(Ordering::SeqCst) - frames_before;
    let mut latencies: Vec<u64> = reader
        .samples
        .iter()
        .map(|(_, _, read, sent)| read.saturating_sub(*sent))
        .collect();
    latencies.sort_unstable();
    let pct = |p: f64| {
        let last = latencies.len().saturating_sub(1);
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(last))
            .map_or(0.0, |ns| *ns as f64 / 1e6)
    };
    println!(
        "{{\"phase\": \"fanout\", \"streams\": {}, \"bots\": {}, \"events\": {events}, \
         \"requests\": {requests}, \"inject_seconds\": {inject_secs:.3}, \
         \"elapsed_seconds\": {elapsed:.3}, \"frames\": {frames}, \"expected_frames\": {expected}, \
         \"cpu_ticks\": {cpu}, \"idle_ticks\": {}, \"idle_seconds\": {:.3}, \"p50_ms\": {:.3}, \
         \"p99_ms\": {:.3}, \"max_ms\": {:.3}}}",
        reader.streams.len(),
        per_bot.len(),
        idle.0,
        idle.1,
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}

/// Frames the streams should read: each request's events reach every
/// stream of its bot.
fn events_expected(per_bot: &HashMap<u64, usize>, events: u64, requests: u64) -> u64 {
    let mut bots: Vec<u64> = per_bot.keys().copied().collect();
    bots.sort_unstable();
    let burst = events / requests.max(1);
    (0..requests)
        .map(|j| per_bot[&bots[(j % bots.len() as u64) as usize]] as u64 * burst)
        .sum()
}

/// A stream's socket: from its own loopback source address (`per_ip`
/// streams each), the request written, then non-blocking.
fn open(args: &Args, k: usize, session: &str) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let group = k / args.per_ip.max(1);
    let source = Ipv4Addr::new(127, 1, (group / 250) as u8, (group % 250 + 1) as u8);
    socket.bind(&SocketAddrV4::new(source, 0).into())?;
    socket.connect_timeout(&args.service.into(), Duration::from_secs(5))?;
    let mut tcp: TcpStream = socket.into();
    tcp.set_nodelay(true)?;
    write!(
        tcp,
        "GET /api/events HTTP/1.1\r\nHost: bench\r\nAuthorization: {session}\r\n\
         Accept: text/event-stream\r\n\r\n"
    )?;
    tcp.set_nonblocking(true)?;
    Ok(tcp)
}

struct Reader<'a> {
    poll: &'a mut Poll,
    streams: &'a mut Vec<Stream>,
    shared: &'a Shared,
    samples: &'a mut Vec<Sample>,
}

impl Reader<'_> {
    /// One wait for readable streams, and everything they hold.
    fn turn(&mut self, timeout: Duration) -> Result<(), String> {
        let mut events = Events::with_capacity(1024);
        match self.poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        let mut chunk = [0u8; 65536];
        for event in events.iter() {
            let k = event.token().0;
            loop {
                let stream = &mut self.streams[k];
                if stream.closed {
                    break;
                }
                match stream.sock.read(&mut chunk) {
                    Ok(0) => {
                        stream.closed = true;
                        if !stream.ready {
                            self.shared.failed.fetch_add(1, Ordering::SeqCst);
                        }
                        break;
                    }
                    Ok(n) => {
                        let at = now_ns();
                        stream.buf.extend_from_slice(&chunk[..n]);
                        self.frames(k, at);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        stream.closed = true;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes the whole frames out of stream `k`'s buffer.
    fn frames(&mut self, k: usize, at: u64) {
        let stream = &mut self.streams[k];
        let mut start = 0;
        if !stream.head_done {
            let Some(end) = find(&stream.buf, b"\r\n\r\n") else {
                return;
            };
            if !stream.buf.starts_with(b"HTTP/1.1 200") {
                let text = String::from_utf8_lossy(&stream.buf[..stream.buf.len().min(300)]);
                eprintln!("bench-events: stream {k} refused: {text}");
                self.shared.failed.fetch_add(1, Ordering::SeqCst);
                stream.closed = true;
                return;
            }
            stream.head_done = true;
            start = end + 4;
        }
        while let Some(len) = find(&stream.buf[start..], b"\n\n") {
            let frame = &stream.buf[start..start + len];
            start += len + 2;
            if frame.starts_with(b"retry:") {
                if !stream.ready {
                    stream.ready = true;
                    self.shared.ready.fetch_add(1, Ordering::SeqCst);
                }
                continue;
            }
            if frame.starts_with(b":") {
                continue;
            }
            self.shared.frames.fetch_add(1, Ordering::Relaxed);
            let Some((seq, sent)) = stamp(frame) else {
                continue;
            };
            self.shared.bench_frames.fetch_add(1, Ordering::SeqCst);
            self.samples.push((seq, k as u32, at, sent));
            let mut current = self.shared.current.lock().unwrap();
            if current.0 == seq {
                current.1 += 1;
                self.shared.arrived.notify_all();
            }
        }
        stream.buf.drain(..start);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `"nonce":"b<seq>.<sent_ns>"` in a frame.
fn stamp(frame: &[u8]) -> Option<(u64, u64)> {
    const KEY: &[u8] = b"\"nonce\":\"b";
    let at = find(frame, KEY)? + KEY.len();
    let rest = &frame[at..];
    let dot = rest.iter().position(|b| *b == b'.')?;
    let end = rest.iter().position(|b| *b == b'"')?;
    let seq = std::str::from_utf8(&rest[..dot]).ok()?.parse().ok()?;
    let sent = std::str::from_utf8(&rest[dot + 1..end])
        .ok()?
        .parse()
        .ok()?;
    Some((seq, sent))
}

/// The fake's control API over one keep-alive connection.
struct Injector {
    tcp: TcpStream,
    buf: Vec<u8>,
    rng: u64,
}

impl Injector {
    fn new(fake: SocketAddr) -> Result<Injector, String> {
        let tcp = TcpStream::connect(fake).map_err(|e| format!("fake: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Injector {
            tcp,
            buf: Vec::with_capacity(4096),
            rng: 0x9E37_79B9_7F4A_7C15,
        })
    }

    /// Characters no JSON escape touches, in an order zlib cannot predict.
    fn pad(&mut self, n: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .";
        (0..n)
            .map(|_| {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                ALPHABET[(self.rng % ALPHABET.len() as u64) as usize] as char
            })
            .collect()
    }

    /// Dispatches `count` MESSAGE_CREATEs to `bot`, stamped `seq` and now;
    /// returns how many the fake queued.
    fn dispatch(&mut self, bot: u64, seq: u64, count: u64, pad: usize) -> Result<u64, String> {
        let content = self.pad(pad);
        let sent = now_ns();
        let body = format!(
            "{{\"bot_id\":\"{bot}\",\"t\":\"MESSAGE_CREATE\",\"count\":{count},\"d\":{{\
             \"id\":\"{id}\",\"type\":0,\"channel_id\":\"1200000000000000001\",\
             \"author\":{{\"id\":\"1300000000000000001\",\"username\":\"bench\",\
             \"discriminator\":\"0\",\"global_name\":\"Bench\",\"avatar\":null}},\
             \"content\":\"{content}\",\"timestamp\":\"2026-12-01T00:00:00.000000+00:00\",\
             \"edited_timestamp\":null,\"tts\":false,\"mention_everyone\":false,\
             \"mentions\":[],\"mention_roles\":[],\"attachments\":[],\"embeds\":[],\
             \"pinned\":false,\"nonce\":\"b{seq}.{sent}\"}}}}",
            id = 1_400_000_000_000_000_000u64 + seq
        );
        write!(
            self.tcp,
            "POST /_fake/gateway/dispatch HTTP/1.1\r\nHost: fake\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .map_err(|e| format!("fake: {e}"))?;
        let answer = self.answer()?;
        let dispatched = answer
            .split("\"dispatched\":")
            .nth(1)
            .and_then(|rest| {
                rest.trim_start()
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .ok_or_else(|| format!("the fake answered {answer}"))?;
        Ok(dispatched)
    }

    /// One HTTP answer's body (`Content-Length` framed).
    fn answer(&mut self) -> Result<String, String> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if self.buf.len() >= end + 4 + length {
                    let body =
                        String::from_utf8_lossy(&self.buf[end + 4..end + 4 + length]).to_string();
                    if !head.starts_with("http/1.1 200") {
                        return Err(format!("the fake answered {head} {body}"));
                    }
                    self.buf.drain(..end + 4 + length);
                    return Ok(body);
                }
            }
            let n = self
                .tcp
                .read(&mut chunk)
                .map_err(|e| format!("fake: {e}"))?;
            if n == 0 {
                return Err("the fake closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Latency mode: one event at a time, bots in turn; the next goes once
/// every stream of the bot read this one, or after 2 s. Returns
/// (event, bot, injection started, injection answered) per event.
fn serial(
    fake: SocketAddr,
    bots: &[u64],
    per_bot: &HashMap<u64, usize>,
    events: u64,
    pad: usize,
    shared: &Shared,
) -> Result<Vec<(u64, u64, u64, u64)>, String> {
    let mut injector = Injector::new(fake)?;
    let mut out = Vec::with_capacity(events as usize);
    for seq in 0..events {
        let bot = bots[(seq % bots.len() as u64) as usize];
        let want = per_bot[&bot];
        *shared.current.lock().unwrap() = (seq, 0);
        let start = now_ns();
        injector.dispatch(bot, seq, 1, pad)?;
        let end = now_ns();
        out.push((seq, bot, start, end));
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut current = shared.current.lock().unwrap();
        while current.1 < want {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                eprintln!(
                    "bench-events: event {seq}: {} of {want} reads after 2 s",
                    current.1
                );
                break;
            }
            current = shared.arrived.wait_timeout(current, left).unwrap().0;
        }
    }
    *shared.current.lock().unwrap() = (u64::MAX, 0);
    Ok(out)
}

/// Fan-out mode: `rate` events per second for `seconds`, `burst` per
/// request, bots in turn. Returns (events, requests, seconds it took).
fn paced(
    fake: SocketAddr,
    bots: &[u64],
    rate: u64,
    seconds: f64,
    burst: u64,
    pad: usize,
) -> Result<(u64, u64, f64), String> {
    let mut injector = Injector::new(fake)?;
    let requests = ((rate as f64 * seconds) / burst as f64).round() as u64;
    let interval = Duration::from_secs_f64(burst as f64 / rate as f64);
    let started = Instant::now();
    let mut events = 0;
    for j in 0..requests {
        let due = started + interval * j as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let bot = bots[(j % bots.len() as u64) as usize];
        events += injector.dispatch(bot, j, burst, pad)?;
    }
    Ok((events, requests, started.elapsed().as_secs_f64()))
}
