//! logging: where log lines go and in what shape: simplelog's text lines
//! for people (`--log-format text`), or one JSON object per line for log
//! shippers (`--log-format json`), with the same fields.
//!
//! Both admit only this crate's records: ureq logs request headers (the bot
//! token) at debug and trace, and so might any other dependency. Structured
//! fields travel as `log` key-values (the request line's method, target,
//! status, duration and session prefix); the text format shows them through
//! its message, the JSON format as fields of their own.
//!
//! Lines are not written to stderr one by one: a `write` per request line,
//! and threads queueing on the logger's lock to make it, were a tenth of the
//! service's CPU per request (`make bench`, perf and `strace -c`). Both
//! formats append to one buffer that a background thread writes out at most
//! `FLUSH_AFTER` after its first line, the way nginx's `access_log …
//! flush=` does. Warnings and errors wake the writer at once, with
//! everything before them; a panic, the listening line and the exit wait
//! for it (at most `FLUSH_WAIT`).
//!
//! Architecture invariant: no thread but `log-flush` ever writes to stderr,
//! and it writes with no lock held. When stderr stops taking lines (a pipe
//! nobody reads), the buffer fills to `MAX_BUFFERED` and further lines are
//! dropped and counted (`dbb_log_lines_dropped_total`, and a warning once
//! the writer recovers), so the service never waits on its log reader.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};
use parking_lot::{Condvar, Mutex};

use crate::observe::metrics;

/// Records from other crates never reach the output.
const OUR_TARGET: &str = "discord_bot_backend";
/// How long a line may wait in the buffer.
const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// Past this, new lines are dropped (and counted) until the writer catches
/// up: a stderr nobody reads costs log lines, never a blocked request.
const MAX_BUFFERED: usize = 256 * 1024;
/// Capacity the writer keeps of a written batch: a quiet service's batches
/// fit, and a burst's 256 KiB is not held twice.
const KEEP_WRITTEN: usize = 16 * 1024;
/// The longest `flush` (at the listening line and at exit) waits for
/// stderr to take what is buffered.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Installs the logger and a panic hook that logs a panic as one line.
pub fn init(level: LogLevel, format: LogFormat) {
    let inner: Box<dyn Log> = match format {
        LogFormat::Text => text_logger(level.filter()),
        LogFormat::Json => Box::new(JsonLogger {
            level: level.filter(),
        }),
    };
    if log::set_boxed_logger(Box::new(Buffered { inner })).is_ok() {
        log::set_max_level(level.filter());
        let flusher = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(|| SINK.flush_forever());
        if flusher.is_err() {
            // Nobody would write the buffer out: write each line at once.
            SINK.unbuffered.store(true, Ordering::Relaxed);
        }
    }
    // A panic in a handler is caught and answered 500; log it as one line,
    // through the logger, instead of the default multi-line stderr dump.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()));
        log::error!(
            "panic at {}: {}",
            location.as_deref().unwrap_or("unknown location"),
            panic_message(info.payload())
        );
        // A panic may end the process: its line must be out first (bounded
        // by FLUSH_WAIT, so a stuck stderr cannot hold the panic up).
        SINK.flush();
    }));
}

fn text_logger(level: LevelFilter) -> Box<dyn Log> {
    let config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .add_filter_allow_str(OUR_TARGET)
        .build();
    simplelog::WriteLogger::new(
        level,
        config,
        SinkWriter {
            partial: Vec::new(),
        },
    )
}

/// The lines waiting to be written to stderr, shared by every thread.
static SINK: Sink = Sink {
    state: Mutex::new(State {
        lines: Vec::new(),
        urgent: false,
        appended: 0,
        written: 0,
        dropped: 0,
    }),
    wake: Condvar::new(),
    written: Condvar::new(),
    unbuffered: AtomicBool::new(false),
};

/// Only whole lines ever enter the buffer, so what is written or dropped is
/// always a whole line.
struct Sink {
    state: Mutex<State>,
    /// Wakes the `log-flush` thread: a line arrived, or one must go now.
    wake: Condvar,
    /// Wakes `flush` callers: the writer finished a batch.
    written: Condvar,
    /// Set when the `log-flush` thread could not start.
    unbuffered: AtomicBool,
}

struct State {
    lines: Vec<u8>,
    /// A warning, an error or a `flush` is waiting: write without the
    /// `FLUSH_AFTER` pause.
    urgent: bool,
    /// Bytes ever appended and ever written: a `flush` waits until
    /// `written` reaches what `appended` was when it was called.
    appended: u64,
    written: u64,
    /// Lines dropped since the writer last reported it.
    dropped: u64,
}

impl Sink {
    /// Adds one whole line, or drops it when the buffer is full because the
    /// writer is stuck (a stderr pipe nobody reads): a logging thread never
    /// waits for stderr.
    fn append(&self, line: &[u8]) {
        if self.unbuffered.load(Ordering::Relaxed) {
            let _ = std::io::stderr().write_all(line);
            return;
        }
        let mut state = self.state.lock();
        if state.lines.len() + line.len() > MAX_BUFFERED {
            state.dropped += 1;
            drop(state);
            metrics::global().log_lines_dropped.inc();
            return;
        }
        let was_empty = state.lines.is_empty();
        state.lines.extend_from_slice(line);
        state.appended += line.len() as u64;
        drop(state);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Asks the writer to write what is buffered now, without waiting.
    fn hurry(&self) {
        self.state.lock().urgent = true;
        self.wake.notify_one();
    }

    /// Writes what is buffered now and waits for it, at most `FLUSH_WAIT`:
    /// a stuck stderr delays the exit by that much, never forever.
    fn flush(&self) {
        let deadline = Instant::now() + FLUSH_WAIT;
        let mut state = self.state.lock();
        let target = state.appended;
        state.urgent = true;
        self.wake.notify_one();
        while state.written < target {
            if self.written.wait_until(&mut state, deadline).timed_out() {
                return;
            }
        }
    }

    /// The `log-flush` thread: sleeps until a line arrives, lets more gather
    /// for `FLUSH_AFTER` (unless one is urgent), then writes them in one go
    /// with the lock released, so a blocked write blocks only this thread.
    fn flush_forever(&self) {
        let mut batch = Vec::new();
        loop {
            let dropped = {
                let mut state = self.state.lock();
                while state.lines.is_empty() {
                    self.wake.wait(&mut state);
                }
                if !state.urgent {
                    let until = Instant::now() + FLUSH_AFTER;
                    while !state.urgent && !self.wake.wait_until(&mut state, until).timed_out() {}
                }
                state.urgent = false;
                std::mem::swap(&mut batch, &mut state.lines);
                std::mem::take(&mut state.dropped)
            };
            let _ = std::io::stderr().write_all(&batch);
            let len = batch.len() as u64;
            batch.clear();
            // Swapped with the buffer next time: keep one large allocation
            // between the two, not two.
            if batch.capacity() > KEEP_WRITTEN {
                batch = Vec::new();
            }
            self.state.lock().written += len;
            self.written.notify_all();
            if dropped > 0 {
                log::warn!(
                    "{dropped} log lines were dropped: stderr was not read fast enough \
                     (dbb_log_lines_dropped_total counts them all)"
                );
            }
        }
    }
}

/// simplelog's output. simplelog writes a record in pieces, all under its
/// own lock; the pieces are gathered here and handed to the buffer one
/// whole line at a time.
struct SinkWriter {
    partial: Vec<u8>,
}

impl Write for SinkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(bytes);
        if let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') {
            SINK.append(&self.partial[..=end]);
            self.partial.drain(..=end);
        }
        // A line longer than the buffer could never be written whole.
        if self.partial.len() > MAX_BUFFERED {
            self.partial.clear();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Either format, writing through the buffer; what must be seen now (a
/// warning, an error, a panic) is written at once.
struct Buffered {
    inner: Box<dyn Log>,
}

impl Log for Buffered {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        self.inner.log(record);
        // Only what was written: other crates' records are dropped inside.
        if record.level() <= Level::Warn && record.target().starts_with(OUR_TARGET) {
            SINK.hurry();
        }
    }

    fn flush(&self) {
        SINK.flush();
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

/// `{"time": …, "level": …, "message": …, <key-values>}` per line.
struct JsonLogger {
    level: LevelFilter,
}

impl Log for JsonLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level && metadata.target().starts_with(OUR_TARGET)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = json_line(record);
        line.push('\n');
        SINK.append(line.as_bytes());
    }

    fn flush(&self) {}
}

fn json_line(record: &Record) -> String {
    let time = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut object = serde_json::Map::new();
    object.insert("time".into(), time.into());
    object.insert("level".into(), record.level().as_str().into());
    object.insert("message".into(), record.args().to_string().into());
    let mut fields = Fields(&mut object);
    let _ = record.key_values().visit(&mut fields);
    serde_json::Value::Object(object).to_string()
}

/// Copies a record's key-values into the JSON object, numbers as numbers.
struct Fields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let value = if let Some(n) = value.to_u64() {
            n.into()
        } else if let Some(x) = value.to_f64() {
            serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, Into::into)
        } else {
            value.to_string().into()
        };
        self.0.insert(key.as_str().to_string(), value);
        Ok(())
    }
}

/// `--log-level`: the least severe level written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// `--log-format`: a line of text, or a JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_carries_message_level_time_and_fields() {
        let fields = [
            ("status", Value::from(200u16)),
            ("session", Value::from("abcd")),
        ];
        let line = json_line(
            &Record::builder()
                .args(format_args!("GET /api/guilds 200 1.5ms session=abcd"))
                .level(log::Level::Info)
                .target(OUR_TARGET)
                .key_values(&fields)
                .build(),
        );
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "GET /api/guilds 200 1.5ms session=abcd");
        assert_eq!(line["status"], 200);
        assert_eq!(line["session"], "abcd");
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn control_characters_and_quotes_are_escaped() {
        let line = json_line(
            &Record::builder()
                .args(format_args!("a \"quote\"\nnext line"))
                .level(log::Level::Warn)
                .target(OUR_TARGET)
                .build(),
        );
        assert!(!line.contains('\n'));
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["message"], "a \"quote\"\nnext line");
    }

    #[test]
    fn simplelog_pieces_reach_the_buffer_as_whole_lines() {
        let mut writer = SinkWriter {
            partial: Vec::new(),
        };
        let before = SINK.state.lock().appended;
        writer
            .write_all(b"first\nsecond, still being writ")
            .unwrap();
        assert_eq!(SINK.state.lock().appended - before, b"first\n".len() as u64);
        assert_eq!(writer.partial, b"second, still being writ");
        writer.write_all(b"ten\n").unwrap();
        assert!(writer.partial.is_empty());
    }

    #[test]
    fn other_crates_records_are_dropped() {
        let logger = JsonLogger {
            level: LevelFilter::Trace,
        };
        let ureq = Metadata::builder()
            .target("ureq::unversioned")
            .level(log::Level::Trace)
            .build();
        assert!(!logger.enabled(&ureq));
    }
}
