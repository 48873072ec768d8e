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
//! flush=` does. Warnings and errors are written at once, with everything
//! before them, and so is the buffer at exit.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::ValueEnum;
use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};
use parking_lot::{Condvar, Mutex};

/// Records from other crates never reach the output.
const OUR_TARGET: &str = "discord_bot_backend";
/// How long a line may wait in the buffer.
const FLUSH_AFTER: Duration = Duration::from_millis(50);
/// Past this, the thread that logs writes the buffer out itself: a stderr
/// nobody reads slows logging threads down rather than growing memory.
const MAX_BUFFERED: usize = 256 * 1024;

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
    }));
}

fn text_logger(level: LevelFilter) -> Box<dyn Log> {
    let config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .add_filter_allow_str(OUR_TARGET)
        .build();
    simplelog::WriteLogger::new(level, config, SinkWriter)
}

/// The lines waiting to be written to stderr, shared by every thread.
static SINK: Sink = Sink {
    lines: Mutex::new(Vec::new()),
    pending: Condvar::new(),
    unbuffered: AtomicBool::new(false),
};

struct Sink {
    lines: Mutex<Vec<u8>>,
    /// Signalled when the buffer stops being empty.
    pending: Condvar,
    /// Set when the `log-flush` thread could not start.
    unbuffered: AtomicBool,
}

impl Sink {
    fn append(&self, bytes: &[u8]) {
        let mut lines = self.lines.lock();
        // Written out before it would pass the limit, so the buffer's
        // capacity stays put under heavy logging.
        if lines.len() + bytes.len() > MAX_BUFFERED {
            write_lines(&mut lines, &mut std::io::stderr());
        }
        let was_empty = lines.is_empty();
        lines.extend_from_slice(bytes);
        if self.unbuffered.load(Ordering::Relaxed) {
            write_lines(&mut lines, &mut std::io::stderr());
        } else if was_empty {
            drop(lines);
            self.pending.notify_one();
        }
    }

    fn flush(&self) {
        write_lines(&mut self.lines.lock(), &mut std::io::stderr());
    }

    /// The background writer: sleeps until a line arrives, lets more
    /// gather for `FLUSH_AFTER`, writes them in one go.
    fn flush_forever(&self) {
        loop {
            {
                let mut lines = self.lines.lock();
                while lines.is_empty() {
                    self.pending.wait(&mut lines);
                }
            }
            std::thread::sleep(FLUSH_AFTER);
            self.flush();
        }
    }
}

/// Writes the buffer's whole lines to stderr, under the buffer's lock so
/// that lines keep their order. A line simplelog is still writing, piece by
/// piece, stays for the next time.
fn write_lines(lines: &mut Vec<u8>, out: &mut impl Write) {
    let Some(end) = lines.iter().rposition(|&b| b == b'\n') else {
        return;
    };
    let _ = out.write_all(&lines[..=end]);
    lines.drain(..=end);
    if lines.capacity() > MAX_BUFFERED {
        lines.shrink_to(MAX_BUFFERED);
    }
}

/// simplelog's output: the shared buffer.
struct SinkWriter;

impl Write for SinkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        SINK.append(bytes);
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
            SINK.flush();
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
    fn only_whole_lines_are_written_out() {
        let mut lines = b"first\nsecond\nthird, still being writ".to_vec();
        let mut out = Vec::new();
        write_lines(&mut lines, &mut out);
        assert_eq!(out, b"first\nsecond\n");
        assert_eq!(lines, b"third, still being writ");
        lines.extend_from_slice(b"ten\n");
        write_lines(&mut lines, &mut out);
        assert_eq!(out, b"first\nsecond\nthird, still being written\n");
        assert!(lines.is_empty());
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
