#!/usr/bin/env python3
"""`make bench`: the service against a fast stand-in for Discord, driven by wrk.

Everything is measured in one run on this machine and reported as ratios
(service ÷ direct upstream), because these machines vary 20-30 % between
runs. Prints one Markdown table and writes it to benches/RESULTS.md.

Scenarios (issue #4; issue #18 made the upstream send Discord's rate-limit
headers on every answer, and each bot read its own channel):
  A. upstream answers at once, 64 connections: throughput ratio, CPU per request
  A-0. A against an upstream without rate-limit headers: what the limiter's
     bookkeeping of every answer costs (A ÷ A-0)
  B. upstream answers after 50 ms, 256 connections: throughput ratio, p99
  plus system calls and context switches per request in A (perf stat, in a
  separate run), idle/peak RSS, RSS with 10,000 sessions of 10,000 bots,
  start-up time, binary size, and the rate-limit scenario of issue #3.
  A-R. scenario A with sessions and cluster rate limits in Redis (issue #6),
  against a local redis-server started for it, beside A in memory.

`bench.py writes` (make bench-writes): message sends beside scenario A
(service CPU per send ÷ per read), and RSS of 100,000 idempotency keys.
`bench.py durable` (make bench-durable): logins with and without --data-dir,
RSS and start-up with 10,000 sessions restored from disk.
`bench.py events` (make bench-events, issue #13): the service against the
fake Discord's Gateway over TLS, with benches/events' client: latency from
the fake's send (tcpdump) to an SSE read with 1 stream and with 1,000 over
100 bots, CPU per delivered frame at 10,000 events/s, RSS per idle Gateway
connection (1,000 bots) and per idle stream; writes
benches/RESULTS.events.latest.md. BENCH_EVENTS_SERIAL_ONE / BENCH_EVENTS_SERIAL
(events timed one at a time, default 500 / 1000), BENCH_EVENTS_RATE (10000),
BENCH_EVENTS_SECONDS (10), BENCH_EVENTS_PLAIN=0 skips the plain ws:// memory run.
`bench.py compare OLD NEW [ROUNDS]` (make bench-compare): scenario A for two
builds of the service, alternated in one sitting (BENCH_COMPARE_REDIS=1: A-R,
with a redis-server started for it).

Environment: BENCH_SECONDS (default 10) per wrk run, BENCH_BOTS (default 1000),
BENCH_SERVICE_FLAGS (extra service flags, e.g. "--workers 512"), BENCH_REDIS=0
to skip A-R (it is skipped, with a line saying so, without redis-server).
"""

import bisect
import concurrent.futures
import http.client
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICE = os.path.join(ROOT, "target/release/discord-bot-backend")
UPSTREAM = os.path.join(ROOT, "benches/upstream/target/release/bench-upstream")
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
BOTS = int(os.environ.get("BENCH_BOTS", "1000"))
TICKS = os.sysconf("SC_CLK_TCK")
CHANNEL = "1100000000000000001"
# Bot k reads its own channel, CHANNEL_BASE + k: a bucket per (bot, channel),
# as with real bots.
CHANNEL_BASE = 1_100_000_000_000_000_001


class Process:
    """A child that prints `listening on http://HOST:PORT`; killed on exit."""

    def __init__(self, argv, stream="stdout"):
        self.log = tempfile.TemporaryFile()
        out = {"stdout": self.log} if stream == "stdout" else {"stderr": self.log}
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **out,
                                     **({"stderr": subprocess.DEVNULL} if stream == "stdout" else {"stdout": subprocess.DEVNULL}))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.log.seek(0)
            found = re.search(rb"listening on http://([0-9.]+):(\d+)", self.log.read())
            if found:
                self.host, self.port = found.group(1).decode(), int(found.group(2))
                return
            time.sleep(0.002)
        raise SystemExit(f"{argv[0]} did not start")

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def cpu_seconds(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def status_kib(self, key):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def upstream(latency_ms, headers=True):
    """Discord's stand-in; `headers=False` answers without rate-limit
    headers, to measure what the limiter's bookkeeping costs (A-0)."""
    return Process([UPSTREAM, "--port", "0", "--latency-ms", str(latency_ms), "--threads", "1",
                    *([] if headers else ["--no-ratelimit-headers"])])


def sessions_file(sessions):
    """The wrk script's input: a session and its bot's channel per line."""
    f = tempfile.NamedTemporaryFile("w", delete=False)
    f.write("".join(f"{s} {CHANNEL_BASE + k}\n" for k, s in enumerate(sessions)))
    f.close()
    return f.name


def service(upstream_url, *flags):
    extra = os.environ.get("BENCH_SERVICE_FLAGS", "").split()
    return Process([SERVICE, "--port", "0", "--discord-api", upstream_url + "/api/v10",
                    "--max-sessions", "20000",
                    # wrk is one address far past the default client limit.
                    "--client-rate-limit", "0", "--login-rate-limit", "0", *extra, *flags], stream="stderr")


def request(host, port, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def login_many(svc, count, prefix):
    def login(n):
        status, body = request(svc.host, svc.port, "POST", "/api/auth/login",
                               json.dumps({"token": f"{prefix}-{n}"}), {"Content-Type": "application/json"})
        if status != 200:
            raise SystemExit(f"login failed: {status} {body[:200]}")
        return json.loads(body)["sessionId"]
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        return list(pool.map(login, range(count)))


def wrk(url, connections, sessions_file=None, header=None, seconds=None, send_body=None):
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds or SECONDS}s", "--latency", "--timeout", "10s"]
    env = dict(os.environ)
    if sessions_file:
        argv += ["-s", os.path.join(ROOT, "benches/sessions.lua")]
        env["SESSIONS"] = sessions_file
    if send_body:
        env["SEND_BODY"] = send_body
    if header:
        argv += ["-H", header]
    out = subprocess.run(argv + [url], capture_output=True, text=True, env=env, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def percentile(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    return {"rate": rate, "total": total, "p50": percentile(50), "p99": percentile(99),
            "non2xx": int(errors.group(1)) if errors else 0}


def upstream_count(up):
    return json.loads(request(up.host, up.port, "GET", "/_stats")[1])["requests"]


class RedisServer:
    """redis-server on a free loopback port, no persistence, for scenario A-R."""

    def __init__(self):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise SystemExit("redis-server did not start")

    def flags(self):
        return ["--redis-url", f"redis://127.0.0.1:{self.port}",
                "--session-key", "ab" * 32]

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def scenario(latency_ms, connections, results, name, *flags, headers=True):
    up = upstream(latency_ms, headers)
    direct = wrk(f"{up.url}/api/v10/channels/{CHANNEL}/messages?limit=50", connections, header="Authorization: Bot x")
    svc = service(up.url, *flags)
    results.setdefault("idle_rss", svc.status_kib("VmRSS"))
    sessions = sessions_file(login_many(svc, BOTS, f"bench-{name}"))
    before_cpu, before_up = svc.cpu_seconds(), upstream_count(up)
    through = wrk(f"{svc.url}/api/messages", connections, sessions_file=sessions)
    cpu = svc.cpu_seconds() - before_cpu
    upstream_calls = upstream_count(up) - before_up
    results[name] = {
        "direct": direct, "service": through,
        "ratio": through["rate"] / direct["rate"],
        "cpu_us": cpu / through["total"] * 1e6,
        "upstream_per_request": upstream_calls / through["total"],
        "peak_rss": svc.status_kib("VmHWM"),
    }
    os.unlink(sessions)
    svc.stop()
    up.stop()


def send_scenario(results):
    """Issue #12: scenario A's shape with every request a message send
    (`POST /api/messages`: body checked and rewritten with the nonce, an
    idempotency key made up and its record kept, Discord's answer stored for
    replay). Reported as CPU per send ÷ CPU per read of scenario A."""
    up = upstream(0)
    direct_script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
    direct_script.write('wrk.method = "POST"\nwrk.body = \'{"content":"x"}\'\n'
                        'wrk.headers["Content-Type"] = "application/json"\n')
    direct_script.close()
    argv = ["wrk", "-t2", "-c64", f"-d{SECONDS}s", "--latency", "--timeout", "10s",
            "-s", direct_script.name, "-H", "Authorization: Bot x",
            f"{up.url}/api/v10/channels/{CHANNEL}/messages"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    direct_rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    os.unlink(direct_script.name)
    svc = service(up.url)
    sessions = sessions_file(login_many(svc, BOTS, "bench-send"))
    before_cpu = svc.cpu_seconds()
    through = wrk(f"{svc.url}/api/messages", 64, sessions_file=sessions,
                  send_body='{"content":"benchmark send: a short chat line"}')
    cpu = svc.cpu_seconds() - before_cpu
    results["S"] = {"service": through, "direct_rate": direct_rate,
                    "ratio": through["rate"] / direct_rate,
                    "cpu_us": cpu / through["total"] * 1e6,
                    "peak_rss": svc.status_kib("VmHWM")}
    os.unlink(sessions)
    svc.stop()
    up.stop()


def idempotency_rss(keys=100_000, bots=1000):
    """Issue #12: what `keys` live idempotency records weigh in memory mode,
    as RSS after minus before. Each record is a `POST /api/typing` with its
    own key (Discord answers 204, so only the record is kept), spread over
    `bots` bots and channels so no rate limit slows the run; then the same
    with message sends, whose record keeps Discord's message for replay."""
    up = upstream(0)
    out = {}
    for kind in ("typing", "send"):
        svc = service(up.url)
        sessions = login_many(svc, bots, f"bench-idem-{kind}")
        before = svc.status_kib("VmRSS")

        def run(worker, svc=svc, sessions=sessions, kind=kind):
            connection = http.client.HTTPConnection(svc.host, svc.port, timeout=30)
            for n in range(worker, keys, 16):
                bot = n % bots
                channel = CHANNEL_BASE + bot
                path = (f"/api/typing?channelId={channel}" if kind == "typing"
                        else f"/api/messages?channelId={channel}")
                connection.request("POST", path, body=b'{"content":"kept for replay"}',
                                   headers={"Authorization": sessions[bot],
                                            "Content-Type": "application/json",
                                            "Idempotency-Key": f"bench-{kind}-{n}"})
                response = connection.getresponse()
                response.read()
                if response.status not in (201, 204):
                    raise SystemExit(f"{kind} {n}: {response.status}")
            connection.close()
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(run, range(16)))
        out[kind] = (svc.status_kib("VmRSS") - before) / 1024
        svc.stop()
    up.stop()
    return out


def writes():
    """`make bench-writes`: the send scenario beside scenario A, and what
    idempotency records weigh."""
    for binary in (SERVICE, UPSTREAM):
        if not os.path.exists(binary):
            raise SystemExit(f"missing {binary}: run `make bench-writes`, which builds it")
    results = {}
    scenario(0, 64, results, "A")
    send_scenario(results)
    rss = idempotency_rss()
    a, s = results["A"], results["S"]
    rows = [
        ("S: sends, 0 ms upstream, 64 conns: service CPU per send ÷ per read (A)",
         f"{s['cpu_us'] / a['cpu_us']:.2f}",
         f"{s['cpu_us']:.0f} µs per send vs {a['cpu_us']:.0f} µs per read; sends {s['service']['rate']:.0f} req/s vs {s['direct_rate']:.0f} direct ({s['ratio']:.3f}); p99 {s['service']['p99']:.2f} ms; non-2xx {s['service']['non2xx']}",
         "≤ 1.5"),
        ("100,000 idempotency keys in memory (204 answers)", f"{rss['typing']:.1f} MiB",
         f"RSS after minus before; {rss['typing'] * 1048576 / 100_000:.0f} B per key", "≤ 16 MiB"),
        ("100,000 idempotency keys in memory (message sends)", f"{rss['send']:.1f} MiB",
         f"each keeps Discord's ~1 KB message for replay; {rss['send'] * 1048576 / 100_000:.0f} B per key", ""),
    ]
    table = ["| measure | result | detail | target |", "|---|---|---|---|"]
    table += [f"| {m} | {r} | {d} | {t} |" for m, r, d, t in rows]
    print("\n".join(table))


def kernel_counters(latency_ms, connections):
    """System calls and context switches per request in a scenario, from
    `perf stat` attached to the service during a separate 5 s run: the
    syscall tracepoint slows the service, so the timed runs are never
    traced. Unlike CPU time, these counts hardly move between runs of one
    binary on a noisy machine. None where perf cannot count them."""
    if not shutil.which("perf"):
        return None
    up = upstream(latency_ms)
    svc = service(up.url)
    out = tempfile.NamedTemporaryFile("r", suffix=".perf", delete=False)
    try:
        sessions = sessions_file(login_many(svc, BOTS, "bench-counters"))
        perf = subprocess.Popen(["perf", "stat", "-x,", "-o", out.name, "-e",
                                 "context-switches,raw_syscalls:sys_enter", "-p", str(svc.proc.pid)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        through = wrk(f"{svc.url}/api/messages", connections, sessions_file=sessions, seconds=5)
        perf.send_signal(2)
        perf.wait(timeout=10)
        os.unlink(sessions)
        counts = {}
        for line in out:
            fields = line.strip().split(",")
            if len(fields) > 2 and fields[0].replace(".", "").isdigit():
                counts[fields[2]] = float(fields[0])
        total = through["total"]
        return {"syscalls": counts["raw_syscalls:sys_enter"] / total,
                "switches": counts["context-switches"] / total}
    except (KeyError, OSError, subprocess.SubprocessError):
        return None
    finally:
        os.unlink(out.name)
        svc.stop()
        up.stop()


def startup_ms(up):
    started = time.monotonic()
    proc = subprocess.Popen([SERVICE, "--port", "0", "--discord-api", up.url + "/api/v10"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line = proc.stderr.readline()
    port = int(re.search(rb":(\d+)\s*$", line.strip()).group(1))
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
            if s.recv(12).startswith(b"HTTP/1.1 200"):
                s.close()
                break
            s.close()
        except OSError:
            time.sleep(0.0005)
    elapsed = (time.monotonic() - started) * 1000
    proc.kill()
    proc.wait()
    return elapsed


def sessions_rss(up, count):
    svc = service(up.url, "--log-level", "warn", "--max-sessions", str(max(count, 20_000)))
    login_many(svc, count, "bench-rss")
    time.sleep(0.5)
    rss = svc.status_kib("VmRSS")
    svc.stop()
    return rss


def durable():
    """`make bench-durable` (issue #11): what `--data-dir` costs where it
    works, logins, and what restoring 10,000 sessions weighs; scenario A
    with and without it is `make bench-compare` against a wrapper."""
    up = upstream(0)
    rows = ["| measure | in memory | with --data-dir |", "|---|---|---|"]
    rates = []
    for flags in ([], ["--data-dir"]):
        workdir = tempfile.mkdtemp(prefix="dbb-bench-durable-")
        extra = [flags[0], os.path.join(workdir, "data")] if flags else []
        svc = service(up.url, "--log-level", "warn", *extra)
        login_many(svc, 200, "warm")
        started = time.monotonic()
        login_many(svc, 2000, "timed")
        rates.append(2000 / (time.monotonic() - started))
        svc.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    rows.append(f"| logins per second (32 at once, 2,000) | {rates[0]:.0f} | {rates[1]:.0f} ({rates[1] / rates[0]:.2f} ×) |")
    workdir = tempfile.mkdtemp(prefix="dbb-bench-durable-")
    data = ["--data-dir", os.path.join(workdir, "data"), "--max-sessions", "20000", "--log-level", "warn"]
    svc = service(up.url, *data)
    login_many(svc, 10_000, "restore")
    time.sleep(0.5)
    logged_in = svc.status_kib("VmRSS")
    svc.proc.send_signal(15)
    svc.proc.wait(timeout=30)
    started = time.monotonic()
    svc = service(up.url, *data)
    restore_ms = (time.monotonic() - started) * 1000
    time.sleep(0.5)
    restored = svc.status_kib("VmRSS")
    svc.stop()
    db_bytes = sum(os.path.getsize(os.path.join(workdir, "data", f))
                   for f in os.listdir(os.path.join(workdir, "data")))
    shutil.rmtree(workdir, ignore_errors=True)
    rows.append(f"| RSS with 10,000 sessions of 10,000 bots | {logged_in / 1024:.1f} MiB (after logging in) | {restored / 1024:.1f} MiB (restored from disk) |")
    rows.append(f"| start with 10,000 sessions to restore | | {restore_ms:.0f} ms to the listening line |")
    rows.append(f"| the data directory with 10,000 sessions | | {db_bytes / 1e6:.1f} MB |")
    up.stop()
    print("\n".join(rows))


def rate_limit_scenario():
    """Issue #3's scenario, release build, against the fake enforcing limits."""
    out = subprocess.run(["cargo", "test", "--release", "-q", "--test", "ratelimit", "two_sessions",
                          "--", "--nocapture"], cwd=ROOT, capture_output=True, text=True)
    line = re.search(r"600 reads per bot in ([\d.]+)s: ([\d.]+) ×[^;]*; (\d+) upstream 429s", out.stderr + out.stdout)
    passed = "test result: ok" in out.stdout
    return (float(line.group(1)), float(line.group(2)), int(line.group(3)), passed) if line else (None, None, None, passed)


def curve():
    """Issue #4, item 4: the 50 ms scenario at 64, 256 and 1024 connections
    (default workers, and workers = connections), and RSS with 1k, 10k and
    100k sessions; the data behind RESULTS.md's scale claims."""
    rows = ["| 50 ms upstream | workers | throughput ÷ direct | req/s (direct) | p99 ms | CPU/request | peak RSS |",
            "|---|---|---|---|---|---|---|"]
    for connections in (64, 256, 1024):
        for workers in sorted({256, connections}):
            results = {}
            scenario(50, connections, results, f"c{connections}", "--workers", str(workers))
            r = results[f"c{connections}"]
            rows.append(f"| {connections} conns | {workers} | {r['ratio']:.3f} | {r['service']['rate']:.0f} ({r['direct']['rate']:.0f}) "
                        f"| {r['service']['p99']:.1f} | {r['cpu_us']:.0f} µs | {r['peak_rss'] / 1024:.1f} MiB |")
            print(rows[-1], flush=True)
    rows += ["", "| sessions (one bot each) | RSS |", "|---|---|"]
    up = upstream(0)
    for count in (1_000, 10_000, 100_000):
        rows.append(f"| {count:,} | {sessions_rss(up, count) / 1024:.1f} MiB |")
        print(rows[-1], flush=True)
    up.stop()
    print("\n".join(rows))


def compare(before, after, rounds):
    """`make bench-compare BASE=...`: scenario A for two builds, alternated
    in one sitting (before, after, after, before, ...), because on these
    machines CPU time moves 20-30 % between sittings but far less between
    neighbouring runs. Prints each run and the medians."""
    global SERVICE
    runs = {before: [], after: []}
    redis = RedisServer() if os.environ.get("BENCH_COMPARE_REDIS") == "1" else None
    flags = redis.flags() if redis else []
    for round_ in range(rounds):
        # A, B, then B, A: the second run of a pair reads 5-10 % slower on
        # these machines (measured), so each build goes first half the time.
        order = (before, after) if round_ % 2 == 0 else (after, before)
        for binary in order:
            SERVICE = binary
            results = {}
            scenario(0, 64, results, "A", *flags)
            a = results["A"]
            runs[binary].append(a)
            print(f"round {round_ + 1} {binary}: {a['cpu_us']:.1f} us CPU per request, "
                  f"throughput {a['ratio']:.3f} of direct", flush=True)

    def median(values):
        values = sorted(values)
        return values[len(values) // 2]
    cpu = {b: median([r["cpu_us"] for r in runs[b]]) for b in runs}
    ratio = {b: median([r["ratio"] for r in runs[b]]) for b in runs}
    if redis:
        redis.stop()
    print(f"median of {rounds}{' (A-R: sessions and limits in Redis)' if redis else ''}: "
          f"before {cpu[before]:.1f} us, after {cpu[after]:.1f} us "
          f"(after / before {cpu[after] / cpu[before]:.3f}); throughput ratio "
          f"{ratio[before]:.3f} -> {ratio[after]:.3f}")


# --- make bench-events (issue #13, "Performance") ---------------------------

FAKE = os.path.join(ROOT, "target/release/fake-discord")
EVENTS_CLIENT = os.path.join(ROOT, "benches/events/target/release/bench-events")
GW_BOT_BASE = 500_000_000_000_000_000
GW_GUILD_BASE = 600_000_000_000_000_000


def gw_token(k):
    return f"bench-gw-{k}"


def make_certs(directory):
    """A throwaway CA and its leaf for 127.0.0.1 (openssl from Debian): the
    fake's Gateway serves the leaf, the service trusts the CA through
    --gateway-ca-file. Returns (ca, cert, key) paths."""
    ca, ca_key = os.path.join(directory, "ca.pem"), os.path.join(directory, "ca.key")
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    csr, ext = os.path.join(directory, "leaf.csr"), os.path.join(directory, "leaf.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda argv: subprocess.run(argv, check=True, capture_output=True)
    run(["openssl", "req", "-x509", *ec, "-days", "2", "-subj", "/CN=bench CA", "-keyout", ca_key, "-out", ca])
    run(["openssl", "req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", csr])
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "2", "-extfile", ext, "-out", cert])
    return ca, cert, key


def gw_world(bots, directory):
    """`bots` bots, each in a guild of its own with 25 members and one
    channel, both privileged intents enabled: READY and a GUILD_CREATE each,
    as a small real bot gets."""
    world = {"bots": [{"token": gw_token(k), "id": str(GW_BOT_BASE + k), "username": f"Bench{k}",
                       "guilds": [str(GW_GUILD_BASE + k)],
                       "privileged_intents": ["GUILD_MEMBERS", "MESSAGE_CONTENT"]} for k in range(bots)],
             "guilds": [{"id": str(GW_GUILD_BASE + k), "name": f"Guild {k}", "member_count": 25,
                         "channels": [{"id": str(GW_GUILD_BASE + 500_000 + k), "name": "general"}]}
                        for k in range(bots)]}
    path = os.path.join(directory, f"world-{bots}.json")
    with open(path, "w") as f:
        json.dump(world, f)
    return path


def fake_discord(world, certs):
    tls = ["--gateway-tls-cert", certs[1], "--gateway-tls-key", certs[2]] if certs else []
    return Process([FAKE, "--port", "0", "--world", world, "--no-ratelimit", *tls])


def fake_json(fake, method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bot {token}"
    status, data = request(fake.host, fake.port, method, path,
                           json.dumps(body) if body is not None else None, headers)
    if status != 200:
        raise SystemExit(f"fake {method} {path}: {status} {data[:200]}")
    return json.loads(data)


def wait_gateways(fake, count, timeout=120):
    """Until `count` Gateway sessions are connected at the fake (READY sent)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = fake_json(fake, "GET", "/_fake/gateway/stats")
        connected = sum(1 for s in stats["sessions"] if s["connected"])
        if connected >= count:
            return connected
        if time.monotonic() > deadline:
            raise SystemExit(f"only {connected} of {count} Gateway sessions after {timeout} s")
        time.sleep(0.5)


def login_tokens(svc, tokens):
    def login(token):
        status, body = request(svc.host, svc.port, "POST", "/api/auth/login",
                               json.dumps({"token": token}), {"Content-Type": "application/json"})
        if status != 200:
            raise SystemExit(f"login failed: {status} {body[:200]}")
        return json.loads(body)["sessionId"]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return list(pool.map(login, tokens))


def events_service(fake, certs, *flags):
    return service(fake.url, "--log-level", "warn", *(["--gateway-ca-file", certs[0]] if certs else []), *flags)


def streams_file(directory, sessions, bots, name):
    path = os.path.join(directory, f"streams-{name}.txt")
    with open(path, "w") as f:
        f.write("".join(f"{s} {b}\n" for s, b in zip(sessions, bots)))
    return path


class EventsClient:
    """benches/events' binary: SSE streams on one epoll loop."""

    def __init__(self, phases, svc, fake, streams, *flags):
        self.proc = subprocess.Popen(
            [EVENTS_CLIENT, phases, "--service", f"{svc.host}:{svc.port}",
             "--fake", f"{fake.host}:{fake.port}", "--streams", streams, *flags],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def line(self, prefix):
        line = self.proc.stdout.readline()
        if not line.startswith(prefix):
            self.proc.kill()
            raise SystemExit(f"bench-events said {line!r}, expected {prefix}…")
        return line.strip()

    def go(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def finish(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        if self.proc.returncode != 0:
            raise SystemExit(f"bench-events exited {self.proc.returncode}")


def thread_count(proc):
    return proc.status_kib("Threads")


def gateway_memory(workdir, certs, bots=1000):
    """RSS per idle Gateway connection and per idle SSE stream: `bots`
    bots logged in; one stream each starts every bot's Gateway; the
    streams end, the Gateways stay (they close 15 minutes after their last
    subscriber); then `bots` streams again."""
    world = gw_world(bots, workdir)
    fake = fake_discord(world, certs)
    svc = None
    try:
        svc = events_service(fake, certs)
        ids = [GW_BOT_BASE + k for k in range(bots)]
        sessions = login_tokens(svc, [gw_token(k) for k in range(bots)])
        streams = streams_file(workdir, sessions, ids, f"memory-{bots}")
        time.sleep(1)
        out = {"base": svc.status_kib("VmRSS"), "threads_base": thread_count(svc)}
        started = time.monotonic()
        client = EventsClient("hold", svc, fake, streams)
        client.line("ready")
        wait_gateways(fake, bots)
        out["gateways_ready_s"] = time.monotonic() - started
        time.sleep(3)
        # Every inflater live: READY and GUILD_CREATE came in seconds ago.
        out["with_streams"] = svc.status_kib("VmRSS")
        out["threads_with_streams"] = thread_count(svc)
        client.go()
        client.line("closed")
        client.finish()
        # A stream's thread learns that its client left when a write
        # fails: a tiny event per bot (a second write fails for sure).
        for bot in ids:
            fake_json(fake, "POST", "/_fake/gateway/dispatch", {"bot_id": str(bot), "t": "BENCH_NUDGE",
                                                               "d": {}, "count": 2})
        deadline = time.monotonic() + 30
        while thread_count(svc) > out["threads_base"] + bots and time.monotonic() < deadline:
            time.sleep(0.2)
        # Idle: nothing but heartbeat ACKs for longer than the 10 s after
        # which a connection parks its inflater (gateway/connection.rs).
        time.sleep(12)
        out["gateways_only"] = svc.status_kib("VmRSS")
        out["threads_gateways_only"] = thread_count(svc)
        client = EventsClient("hold", svc, fake, streams)
        client.line("ready")
        time.sleep(2)
        out["streams_again"] = svc.status_kib("VmRSS")
        client.go()
        client.line("closed")
        client.finish()
        out["peak"] = svc.status_kib("VmHWM")
        out["gateway_kib"] = (out["gateways_only"] - out["base"]) / bots
        out["stream_kib"] = (out["streams_again"] - out["gateways_only"]) / bots
        # Live (not parked) Gateways, 3 s after READY, net of the streams'
        # own cost measured the second time.
        out["live_gateway_kib"] = (out["with_streams"] - out["base"]) / bots - out["stream_kib"]
        return out
    finally:
        if svc:
            svc.stop()
        fake.stop()


def read_pcap(path):
    """Packet timestamps (ns since the epoch) of a pcap file, in order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian, nano = {0xa1b2c3d4: ("<", False), 0xa1b23c4d: ("<", True),
                    0xd4c3b2a1: (">", False), 0x4d3cb2a1: (">", True)}[magic]
    stamps, at = [], 24
    while at + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", data[at:at + 16])
        stamps.append(sec * 1_000_000_000 + (frac if nano else frac * 1000))
        at += 16 + incl
    return stamps


def percentiles(values):
    values = sorted(values)
    if not values:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    pick = lambda p: values[min(len(values) - 1, int(len(values) * p))]
    return {"n": len(values), "p50": pick(0.50) / 1e6, "p99": pick(0.99) / 1e6, "max": values[-1] / 1e6}


def match_latencies(raw, stamps):
    """Each event's send at the fake is the first Gateway packet of event
    size after its injection began and before its first read (events go
    one at a time). Returns (service, inject→read, fake hand-off, unmatched)."""
    injections, reads = {}, {}
    for line in open(raw):
        fields = line.split()
        if fields[0] == "inject":
            injections[int(fields[1])] = int(fields[3])
        else:
            reads.setdefault(int(fields[1]), []).append(int(fields[3]))
    service, total, handoff, unmatched = [], [], [], 0
    for seq, start in injections.items():
        got = reads.get(seq)
        if not got:
            unmatched += 1
            continue
        first = min(got)
        k = bisect.bisect_left(stamps, start)
        if k == len(stamps) or stamps[k] > first:
            unmatched += 1
            continue
        sent = stamps[k]
        handoff.append(sent - start)
        service += [r - sent for r in got]
        total += [r - start for r in got]
    return percentiles(service), percentiles(total), percentiles(handoff), unmatched


class Tcpdump:
    """Packets leaving the fake's Gateway port that are event-sized (a
    heartbeat ACK is far smaller), headers only."""

    def __init__(self, port, path):
        self.path = path
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode", "-s", "128", "-B", "16384",
             "--time-stamp-precision=nano", "-w", path, f"tcp src port {port} and greater 400"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        if "listening" not in line:
            self.proc.kill()
            raise SystemExit(f"tcpdump: {line}")

    def stop(self):
        # Packets still in the kernel's ring when tcpdump is stopped are lost.
        time.sleep(0.5)
        self.proc.send_signal(2)
        rest = self.proc.communicate(timeout=10)[1]
        dropped = re.search(r"(\d+) packets dropped by kernel", rest)
        return read_pcap(self.path), int(dropped.group(1)) if dropped else None


def stream_run(workdir, certs, bots, per_bot, events, fanout=None):
    """`bots` bots with `per_bot` streams each (a session per stream):
    serial events for latency, then optionally the paced fan-out."""
    world = gw_world(bots, workdir)
    fake = fake_discord(world, certs)
    svc = None
    try:
        svc = events_service(fake, certs)
        tokens = [gw_token(b) for b in range(bots) for _ in range(per_bot)]
        ids = [GW_BOT_BASE + b for b in range(bots) for _ in range(per_bot)]
        sessions = login_tokens(svc, tokens)
        streams = streams_file(workdir, sessions, ids, f"{bots}x{per_bot}")
        url = fake_json(fake, "GET", "/api/v10/gateway/bot", token=gw_token(0))["url"]
        port = int(url.rsplit(":", 1)[1].strip("/"))
        raw = os.path.join(workdir, f"latency-{bots}x{per_bot}.txt")
        phases = "latency,fanout" if fanout else "latency"
        flags = ["--step", "--out", raw, "--events", str(events), "--pid", str(svc.proc.pid)]
        if fanout:
            flags += ["--rate", str(fanout["rate"]), "--seconds", str(fanout["seconds"]),
                      "--burst", str(fanout["burst"])]
        client = EventsClient(phases, svc, fake, streams, *flags)
        client.line("ready")
        wait_gateways(fake, bots)
        time.sleep(1)
        dump = Tcpdump(port, os.path.join(workdir, f"gw-{bots}x{per_bot}.pcap")) if shutil.which("tcpdump") else None
        client.go()
        out = {"latency_run": json.loads(client.line("{"))}
        if dump:
            stamps, out["dropped"] = dump.stop()
            out["service"], out["total"], out["handoff"], out["unmatched"] = match_latencies(raw, stamps)
        else:
            out["service"] = None
            _, out["total"], _, _ = match_latencies(raw, [])
        if fanout:
            client.line("done")
            client.go()
            out["fanout"] = json.loads(client.line("{"))
        client.finish()
        return out
    finally:
        if svc:
            svc.stop()
        fake.stop()


def events():
    """`make bench-events`: issue #13's Performance numbers in one run."""
    for binary in (SERVICE, FAKE, EVENTS_CLIENT):
        if not os.path.exists(binary):
            raise SystemExit(f"missing {binary}: run `make bench-events`, which builds it")
    workdir = tempfile.mkdtemp(prefix="dbb-bench-events-")
    try:
        certs = make_certs(workdir)
        ticks = os.sysconf("SC_CLK_TCK")
        one = stream_run(workdir, certs, 1, 1, int(os.environ.get("BENCH_EVENTS_SERIAL_ONE", "500")))
        print("1 stream:", json.dumps(one), flush=True)
        fan = {"rate": int(os.environ.get("BENCH_EVENTS_RATE", "10000")),
               "seconds": float(os.environ.get("BENCH_EVENTS_SECONDS", "10")), "burst": 10}
        many = stream_run(workdir, certs, 100, 10, int(os.environ.get("BENCH_EVENTS_SERIAL", "1000")), fan)
        print("1000 streams:", json.dumps(many), flush=True)
        memory = gateway_memory(workdir, certs)
        print("memory (TLS):", json.dumps(memory), flush=True)
        plain = gateway_memory(workdir, None) if os.environ.get("BENCH_EVENTS_PLAIN", "1") == "1" else None
        if plain:
            print("memory (plain ws://):", json.dumps(plain), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    def lat(run, key):
        r = run[key]
        return f"p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms" if r and r["n"] else "n/a"

    f = many["fanout"]
    cpu = f["cpu_ticks"] / ticks
    idle_cpu = f["idle_ticks"] / ticks / f["idle_seconds"] * f["elapsed_seconds"]
    per_frame = cpu / f["frames"] * 1e6 if f["frames"] else float("nan")
    per_frame_net = (cpu - idle_cpu) / f["frames"] * 1e6 if f["frames"] else float("nan")
    rows = [
        ("latency, fake's send → SSE read, 1 stream", lat(one, "service"),
         f"{one['service']['n'] if one['service'] else 0} events one at a time; send = the fake's packet in tcpdump; "
         f"injection → read {lat(one, 'total')} (the fake's own hand-off {lat(one, 'handoff')})", ""),
        ("latency, fake's send → SSE read, 1,000 streams over 100 bots", lat(many, "service"),
         f"{many['latency_run']['events']} events one at a time, each read by its bot's 10 streams ({many['service']['n'] if many['service'] else 0} reads); "
         f"injection → read {lat(many, 'total')}; unmatched {many.get('unmatched')}", "p99 ≤ 5 ms"),
        ("fan-out: service CPU per delivered frame", f"{per_frame:.2f} µs",
         f"{f['events'] / f['inject_seconds']:.0f} events/s for {f['inject_seconds']:.1f} s to 1,000 streams over 100 bots: "
         f"{f['frames']} of {f['expected_frames']} frames read, {cpu:.2f} s CPU; {per_frame_net:.2f} µs net of idle "
         f"({f['idle_ticks'] / ticks / f['idle_seconds'] * 1000:.0f} ms CPU per s idle); injection → read under load "
         f"p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms (includes the fake's hand-off)", "≤ 2 µs"),
        ("RSS per idle Gateway connection, TLS + zlib-stream, 1,000 bots", f"{memory['gateway_kib']:.1f} KiB",
         f"RSS {memory['base'] / 1024:.1f} MiB logged in → {memory['gateways_only'] / 1024:.1f} MiB with 1,000 Gateways "
         f"ready and idle over 12 s (inflaters parked; all ready in {memory['gateways_ready_s']:.1f} s); "
         f"live, 3 s after READY: {memory['live_gateway_kib']:.1f} KiB", "≤ 64 KiB"),
        *([("RSS per idle Gateway connection, plain ws:// + zlib-stream", f"{plain['gateway_kib']:.1f} KiB",
            f"the same with the fake's Gateway without TLS; live {plain['live_gateway_kib']:.1f} KiB", "")] if plain else []),
        ("RSS per idle SSE stream, 1,000 streams", f"{memory['stream_kib']:.1f} KiB",
         f"{memory['gateways_only'] / 1024:.1f} → {memory['streams_again'] / 1024:.1f} MiB (one stream per bot, Gateways already up)",
         "≤ 48 KiB"),
    ]
    table = ["| measure | result | detail | goal |", "|---|---|---|---|"]
    table += [f"| {m} | {r} | {d} | {g} |" for m, r, d, g in rows]
    text = "\n".join(table)
    print(text)
    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    header = (f"`make bench-events`, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores ({cpu_model}); "
              f"service release build, fake Discord's Gateway over TLS on loopback, zlib-stream.\n")
    with open(os.path.join(ROOT, "benches/RESULTS.events.latest.md"), "w") as out:
        out.write(header + "\n" + text + "\n")


def main():
    if sys.argv[1:] == ["events"]:
        return events()
    if sys.argv[1:] == ["curve"]:
        return curve()
    if sys.argv[1:] == ["durable"]:
        return durable()
    if sys.argv[1:] == ["writes"]:
        return writes()
    if sys.argv[1:2] == ["compare"] and len(sys.argv) in (4, 5):
        return compare(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) == 5 else 3)
    for binary in (SERVICE, UPSTREAM):
        if not os.path.exists(binary):
            raise SystemExit(f"missing {binary}: run `make bench`, which builds it")
    results = {}
    scenario(0, 64, results, "A")
    scenario(0, 64, results, "A-0", headers=False)
    if os.environ.get("BENCH_REDIS", "1") == "0":
        print("scenario A-R skipped: BENCH_REDIS=0", file=sys.stderr)
    elif not shutil.which("redis-server"):
        print("scenario A-R SKIPPED: redis-server is not installed (apt-get install -y redis-server)",
              file=sys.stderr)
    else:
        redis = RedisServer()
        try:
            scenario(0, 64, results, "A-R", *redis.flags())
        finally:
            redis.stop()
    scenario(50, 256, results, "B")
    results["counters"] = kernel_counters(0, 64)
    up = upstream(0)
    results["startup_ms"] = min(startup_ms(up) for _ in range(5))
    results["rss_10k"] = sessions_rss(up, 10_000)
    up.stop()
    results["binary"] = os.path.getsize(SERVICE)
    static = os.path.join(ROOT, "target/x86_64-unknown-linux-musl/release/discord-bot-backend")
    results["static"] = os.path.getsize(static) if os.path.exists(static) else None
    rl_seconds, rl_ratio, rl_429s, rl_ok = rate_limit_scenario()

    a, b = results["A"], results["B"]
    mib = lambda kib: f"{kib / 1024:.1f} MiB"
    rows = [
        ("A: 0 ms upstream, 64 conns: throughput ÷ direct", f"{a['ratio']:.3f}",
         f"{a['service']['rate']:.0f} vs {a['direct']['rate']:.0f} req/s direct; p50 {a['service']['p50']:.2f} ms, p99 {a['service']['p99']:.2f} ms", "≥ 0.40"),
        ("A: service CPU per request", f"{a['cpu_us']:.0f} µs", f"{a['upstream_per_request']:.3f} upstream requests per request; non-2xx {a['service']['non2xx']}", "≤ 30 µs"),
        ("A-0: A against an upstream without rate-limit headers: CPU per request", f"{results['A-0']['cpu_us']:.0f} µs",
         f"A ÷ A-0 {a['cpu_us'] / results['A-0']['cpu_us']:.3f} (what the limiter's bookkeeping costs); throughput {results['A-0']['ratio']:.3f} of direct", "A within 1.10 ×"),
        ("A: system calls and context switches per request",
         (f"{results['counters']['syscalls']:.1f} and {results['counters']['switches']:.2f}" if results["counters"] else "n/a"),
         ("`perf stat` on the service in a separate 5 s run of A" if results["counters"] else "perf is missing or cannot trace here"), ""),
        *([("A-R: A with Redis: throughput ÷ A in memory",
            f"{results['A-R']['service']['rate'] / a['service']['rate']:.3f}",
            f"{results['A-R']['service']['rate']:.0f} vs {a['service']['rate']:.0f} req/s; p50 {results['A-R']['service']['p50']:.2f} ms, p99 {results['A-R']['service']['p99']:.2f} ms (in memory p99 {a['service']['p99']:.2f} ms); {results['A-R']['cpu_us']:.0f} µs service CPU per request; non-2xx {results['A-R']['service']['non2xx']}",
            "")] if "A-R" in results else []),
        ("B: 50 ms upstream, 256 conns: throughput ÷ direct", f"{b['ratio']:.3f}",
         f"{b['service']['rate']:.0f} vs {b['direct']['rate']:.0f} req/s direct; p50 {b['service']['p50']:.1f} ms, p99 {b['service']['p99']:.1f} ms (direct p99 {b['direct']['p99']:.1f} ms)", "≥ 0.98, p99 ≤ 60 ms"),
        ("B: service CPU per request", f"{b['cpu_us']:.0f} µs", f"{b['upstream_per_request']:.3f} upstream requests per request; non-2xx {b['service']['non2xx']}", ""),
        ("idle RSS", mib(results["idle_rss"]), "after start, before any request", "≤ 4 MiB"),
        ("peak RSS (VmHWM)", mib(max(a["peak_rss"], b["peak_rss"])), f"A {mib(a['peak_rss'])}, B {mib(b['peak_rss'])}", "≤ 24 MiB"),
        ("RSS with 10,000 sessions of 10,000 bots", mib(results["rss_10k"]), "", "≤ 16 MiB"),
        ("start to first 200 on /healthz", f"{results['startup_ms']:.1f} ms", "best of 5", "≤ 10 ms"),
        ("binary size", f"{results['binary'] / 1e6:.2f} MB",
         "static musl: " + (f"{results['static'] / 1e6:.2f} MB" if results["static"] else "not built (make static)"), ""),
        ("rate limits: 600 reads, 12 channels, 32 clients", f"{rl_ratio:.3f} ×" if rl_ratio else "n/a",
         (f"{rl_seconds:.2f} s vs 12 s at the sustained limits (11 s strict floor): achieved {12 / rl_seconds:.3f} of the allowed rate; {rl_429s} upstream 429s; test {'passed' if rl_ok else 'FAILED'} (all 200, ≤ 1 upstream 429 per bucket, ≤ 50 per second)" if rl_seconds else "scenario did not report"), "≤ 1.1 ×"),
    ]
    table = ["| measure | result | detail | target |", "|---|---|---|---|"]
    table += [f"| {m} | {r} | {d} | {t} |" for m, r, d, t in rows]
    text = "\n".join(table)
    print(text)
    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    header = (f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} cores ({cpu_model}); "
              f"wrk -t2, {SECONDS} s per run, {BOTS} bots; service release build.\n")
    with open(os.path.join(ROOT, "benches/RESULTS.latest.md"), "w") as f:
        f.write(header + "\n" + text + "\n")


if __name__ == "__main__":
    sys.exit(main())
