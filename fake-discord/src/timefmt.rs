//! Time arithmetic and formatting shared by the world and the HTTP layer.
//!
//! Why it exists: Discord messages and members carry ISO 8601 timestamps that
//! must agree with their snowflake ids, rate-limit headers carry epoch seconds
//! with millisecond precision, and HTTP responses carry a `Date` header. We
//! only depend on `serde_json` and `httparse`, so the few calendar conversions
//! we need are written here once.
//!
//! Invariant: every function is pure; nothing here reads the clock except
//! [`unix_now_ms`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Discord's epoch (2015-01-01T00:00:00Z) in Unix milliseconds; snowflakes
/// count milliseconds from here in their top 42 bits.
pub const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// Milliseconds since the Unix epoch, now.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The Unix time (ms) a snowflake was minted at.
pub fn snowflake_unix_ms(id: u64) -> u64 {
    (id >> 22) + DISCORD_EPOCH_MS
}

/// Whole milliseconds in `d`, rounded up, so a client that waits this long
/// never arrives early.
pub fn ceil_ms(d: Duration) -> u64 {
    d.as_micros().div_ceil(1000) as u64
}

/// Formats milliseconds as seconds with exactly three decimals ("1.250").
pub fn secs_3dp(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Converts days since 1970-01-01 into a proleptic Gregorian (year, month, day).
/// This is the classic era/day-of-era decomposition (400-year cycles of
/// 146 097 days, years starting in March so the leap day comes last).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Splits Unix milliseconds into calendar parts.
struct Parts {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    milli: u64,
    weekday: usize,
}

fn parts(unix_ms: u64) -> Parts {
    let days = unix_ms / 86_400_000;
    let rem = unix_ms % 86_400_000;
    let (year, month, day) = civil_from_days(days as i64);
    Parts {
        year,
        month,
        day,
        hour: rem / 3_600_000,
        minute: rem / 60_000 % 60,
        second: rem / 1000 % 60,
        milli: rem % 1000,
        // 1970-01-01 was a Thursday; index 0 is Sunday.
        weekday: ((days + 4) % 7) as usize,
    }
}

/// Discord's timestamp style: `2016-07-01T12:34:56.789000+00:00`.
pub fn iso8601(unix_ms: u64) -> String {
    let p = parts(unix_ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}000+00:00",
        p.year, p.month, p.day, p.hour, p.minute, p.second, p.milli
    )
}

/// RFC 9110 IMF-fixdate for the `Date` header: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(unix_ms: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let p = parts(unix_ms);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[p.weekday],
        p.day,
        MONTHS[p.month as usize - 1],
        p.year,
        p.hour,
        p.minute,
        p.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(
            iso8601(DISCORD_EPOCH_MS),
            "2015-01-01T00:00:00.000000+00:00"
        );
        // 2020-02-29T23:59:59.999Z, a leap day.
        assert_eq!(
            iso8601(1_583_020_799_999),
            "2020-02-29T23:59:59.999000+00:00"
        );
        assert_eq!(http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn rounds_up_to_the_millisecond() {
        assert_eq!(ceil_ms(Duration::from_micros(1)), 1);
        assert_eq!(ceil_ms(Duration::from_micros(1000)), 1);
        assert_eq!(ceil_ms(Duration::from_micros(1001)), 2);
        assert_eq!(secs_3dp(1250), "1.250");
        assert_eq!(secs_3dp(7), "0.007");
    }
}
