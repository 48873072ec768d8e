//! logging: where log lines go and in what shape: simplelog's text lines
//! for people (`--log-format text`), or one JSON object per line for log
//! shippers (`--log-format json`), with the same fields.
//!
//! Both admit only this crate's records: ureq logs request headers (the bot
//! token) at debug and trace, and so might any other dependency. Structured
//! fields travel as `log` key-values (the request line's method, target,
//! status, duration and session prefix); the text format shows them through
//! its message, the JSON format as fields of their own.

use std::io::Write;

use log::kv::{Key, Value, VisitSource};
use log::{LevelFilter, Log, Metadata, Record};

use crate::config::{LogFormat, LogLevel};

/// Records from other crates never reach the output.
const OUR_TARGET: &str = "discord_bot_backend";

/// Installs the logger and a panic hook that logs a panic as one line.
pub fn init(level: LogLevel, format: LogFormat) {
    match format {
        LogFormat::Text => init_text(level.filter()),
        LogFormat::Json => {
            if log::set_boxed_logger(Box::new(JsonLogger {
                level: level.filter(),
            }))
            .is_ok()
            {
                log::set_max_level(level.filter());
            }
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

fn init_text(level: LevelFilter) {
    let config = simplelog::ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .add_filter_allow_str(OUR_TARGET)
        .build();
    // simplelog writes each line in several pieces; unbuffered stderr made
    // that ~30 `write` calls per request line (strace, `make bench`). A
    // LineWriter sends each line in one.
    let stderr = std::io::LineWriter::new(std::io::stderr());
    let _ = simplelog::WriteLogger::init(level, config, stderr);
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
        // One write of a whole line: lines from threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
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
