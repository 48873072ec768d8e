//! query: a passthrough request's query string, checked against the
//! parameters its operation declares and rebuilt from typed values.
//!
//! Invariant: the string sent to Discord is written here from validated
//! values (integers printed, enumerations from the table, text re-encoded
//! with an allowlist), never spliced from the client's bytes: a client's
//! `%26` or `%23` cannot add a parameter or cut the URL (WRITES-NOTES §5.2).
//! Decoding follows `api::query` (once, `+` as space, an empty value counts
//! as absent, a parameter twice is refused) so both front doors agree.

use std::borrow::Cow;
use std::fmt::{self, Write};

use super::{Operation, QueryKind, QueryParam};
use crate::discord::percent::{self, Malformed, encode, printable};
use crate::discord::snowflake::Snowflake;

/// Name-value pairs beyond this many are refused. The largest legitimate
/// query is a guild message search with `channel_id` repeated up to 500
/// times and a few dozen other parameters.
const MAX_PAIRS: usize = 1024;

/// Why a query string is not forwarded; the caller answers 400 with the
/// `Display` text, which names the parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// Not a parameter this operation declares. `accepted` is the list the
    /// message offers instead.
    Unknown {
        name: String,
        accepted: &'static [QueryParam],
    },
    /// A single-valued parameter given more than once: refused rather than
    /// guessed at (API.md, Conventions).
    Repeated { name: &'static str },
    /// A value that is not of the parameter's type or out of its range.
    Invalid { param: QueryParam },
    /// More values than a list parameter takes.
    TooMany { param: QueryParam },
    /// The same value twice in a list the spec declares unique.
    Duplicate { param: QueryParam },
    /// A required parameter absent or empty.
    Missing { name: &'static str },
    /// The query string itself is broken (bad escape, not UTF-8, too long).
    Malformed(&'static str),
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Unknown { name, accepted } => {
                write!(
                    f,
                    "query parameter `{name}` is not one this Discord route takes"
                )?;
                if accepted.is_empty() {
                    return f.write_str(" (it takes none)");
                }
                f.write_str("; it takes ")?;
                for (i, p) in accepted.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}`{}`", p.name)?;
                }
                Ok(())
            }
            QueryError::Repeated { name } => {
                write!(f, "query parameter `{name}` is given more than once")
            }
            QueryError::Invalid { param } => match param.kind {
                QueryKind::List { item, .. } => {
                    write!(f, "each `{}` must be {}", param.name, Describe(item))
                }
                QueryKind::SnowflakeCsv { .. } => write!(
                    f,
                    "`{}` must be Discord IDs (1 to 20 digits that fit an unsigned 64-bit integer), comma-separated",
                    param.name
                ),
                kind => write!(f, "`{}` must be {}", param.name, Describe(&kind)),
            },
            QueryError::TooMany { param } => match param.kind {
                QueryKind::List { max_items, .. } | QueryKind::SnowflakeCsv { max_items } => {
                    write!(f, "`{}` takes at most {max_items} values", param.name)
                }
                _ => write!(
                    f,
                    "query parameter `{}` is given more than once",
                    param.name
                ),
            },
            QueryError::Duplicate { param } => {
                write!(f, "`{}` lists the same value twice", param.name)
            }
            QueryError::Missing { name } => write!(f, "`{name}` is required"),
            QueryError::Malformed(reason) => f.write_str(reason),
        }
    }
}

impl std::error::Error for QueryError {}

/// A kind in words, for `QueryError::Invalid`.
struct Describe<'a>(&'a QueryKind);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.0 {
            QueryKind::Snowflake => {
                f.write_str("a Discord ID: 1 to 20 digits that fit an unsigned 64-bit integer")
            }
            QueryKind::Boolean => f.write_str("`true` or `false`"),
            QueryKind::Integer { min, max: u64::MAX } => write!(f, "an integer of at least {min}"),
            QueryKind::Integer { min, max } => write!(f, "an integer from {min} to {max}"),
            QueryKind::IntOneOf(values) => {
                f.write_str("one of ")?;
                list(f, values.iter())
            }
            QueryKind::Text {
                min_len,
                max_len: Some(max),
            } => write!(
                f,
                "text of {min_len} to {max} characters, without control characters"
            ),
            QueryKind::Text { max_len: None, .. } => f.write_str("text without control characters"),
            QueryKind::OneOf(values) => {
                f.write_str("one of ")?;
                list(f, values.iter())
            }
            QueryKind::DateTime => {
                f.write_str("an RFC 3339 timestamp such as `2024-01-31T12:00:00.000Z`")
            }
            QueryKind::List { item, .. } => Describe(item).fmt(f),
            QueryKind::SnowflakeCsv { .. } => f.write_str("comma-separated Discord IDs"),
        }
    }
}

fn list<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    values: impl Iterator<Item = T>,
) -> fmt::Result {
    for (i, v) in values.enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        write!(f, "{sep}`{v}`")?;
    }
    Ok(())
}

/// Checks `raw_query` (after the `?`, not decoded) against `op`'s declared
/// parameters and returns the query string to send Discord, without the
/// `?`: declared order, canonical values, empty when there is nothing to
/// send.
pub fn query(op: &Operation, raw_query: &str) -> Result<String, QueryError> {
    let declared = op.query;
    // (index in `declared`, canonical encoded value), in arrival order.
    let mut values: Vec<(usize, String)> = Vec::new();
    // Parameters seen, empty or not: a bit per index (the generator refuses
    // an operation with more than 64).
    let mut seen = 0u64;
    let mut pairs = 0;
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        pairs += 1;
        if pairs > MAX_PAIRS {
            return Err(QueryError::Malformed("too many query parameters"));
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name)?;
        let value = decode(value)?;
        let Some(index) = declared.iter().position(|p| p.name == name) else {
            return Err(QueryError::Unknown {
                name: printable(&name),
                accepted: declared,
            });
        };
        let param = declared[index];
        let bit = 1u64 << index;
        let repeatable = matches!(
            param.kind,
            QueryKind::List { .. } | QueryKind::SnowflakeCsv { .. }
        );
        if seen & bit != 0 && !repeatable {
            return Err(QueryError::Repeated { name: param.name });
        }
        seen |= bit;
        if value.is_empty() {
            continue;
        }
        match param.kind {
            QueryKind::List {
                item,
                max_items,
                unique,
            } => {
                let canonical = scalar(item, &value).ok_or(QueryError::Invalid { param })?;
                let mut count = 0;
                for (i, v) in &values {
                    if *i == index {
                        count += 1;
                        if unique && *v == canonical {
                            return Err(QueryError::Duplicate { param });
                        }
                    }
                }
                if count >= usize::from(max_items) {
                    return Err(QueryError::TooMany { param });
                }
                values.push((index, canonical));
            }
            QueryKind::SnowflakeCsv { max_items } => {
                // One entry per parameter, extended by each repetition.
                let at = match values.iter().position(|(i, _)| *i == index) {
                    Some(at) => at,
                    None => {
                        values.push((index, String::new()));
                        values.len() - 1
                    }
                };
                let mut ids: Vec<u64> = parse_csv(&values[at].1);
                for item in value.split(',') {
                    let id = Snowflake::parse(item).ok_or(QueryError::Invalid { param })?;
                    if ids.contains(&id.get()) {
                        return Err(QueryError::Duplicate { param });
                    }
                    ids.push(id.get());
                    if ids.len() > usize::from(max_items) {
                        return Err(QueryError::TooMany { param });
                    }
                }
                let mut joined = String::with_capacity(ids.len() * 20);
                for (i, id) in ids.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    let _ = write!(joined, "{sep}{id}");
                }
                values[at].1 = joined;
            }
            kind => {
                let canonical = scalar(&kind, &value).ok_or(QueryError::Invalid { param })?;
                values.push((index, canonical));
            }
        }
    }
    for (index, param) in declared.iter().enumerate() {
        if param.required && !values.iter().any(|(i, _)| *i == index) {
            return Err(QueryError::Missing { name: param.name });
        }
    }
    // Declared order, each list's values in the client's order (the sort is
    // stable), so the same request always makes the same URL.
    values.sort_by_key(|(index, _)| *index);
    let mut out = String::new();
    for (index, value) in &values {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(declared[*index].name);
        out.push('=');
        out.push_str(value);
    }
    Ok(out)
}

/// The ids of a comma list this module wrote (so every item parses).
fn parse_csv(text: &str) -> Vec<u64> {
    text.split(',').filter_map(|s| s.parse().ok()).collect()
}

/// One value of a single-valued kind, canonical and ready for a URL; `None`
/// when it is not of the kind.
fn scalar(kind: &QueryKind, value: &str) -> Option<String> {
    match *kind {
        QueryKind::Snowflake => Snowflake::parse(value).map(|id| id.to_string()),
        QueryKind::Boolean => match value {
            "true" | "1" => Some("true".into()),
            "false" | "0" => Some("false".into()),
            _ => None,
        },
        QueryKind::Integer { min, max } => digits(value)
            .filter(|n| (min..=max).contains(n))
            .map(|n| n.to_string()),
        QueryKind::IntOneOf(allowed) => digits(value)
            .filter(|n| allowed.iter().any(|a| u64::from(*a) == *n))
            .map(|n| n.to_string()),
        QueryKind::Text { min_len, max_len } => {
            let chars = value.chars().count();
            let fits = chars >= usize::from(min_len)
                && max_len.is_none_or(|max| chars <= usize::from(max))
                && !value.chars().any(char::is_control);
            fits.then(|| encode(value))
        }
        QueryKind::OneOf(allowed) => allowed.iter().find(|a| **a == value).map(|a| encode(a)),
        QueryKind::DateTime => rfc3339(value).then(|| encode(value)),
        QueryKind::List { .. } | QueryKind::SnowflakeCsv { .. } => None,
    }
}

/// 1 to 20 ASCII digits that fit a u64.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`, fields in range. The
/// time zone is required, as RFC 3339 requires it: a local time would be
/// read by Discord in a zone the client did not choose.
fn rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    let num = |at: usize, len: usize, max: u32| -> Option<u32> {
        let part = b.get(at..at + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'));
        (n <= max).then_some(n)
    };
    let date_time = num(0, 4, 9999).is_some()
        && b.get(4) == Some(&b'-')
        && num(5, 2, 12).is_some_and(|m| m >= 1)
        && b.get(7) == Some(&b'-')
        && num(8, 2, 31).is_some_and(|d| d >= 1)
        && matches!(b.get(10), Some(b'T' | b't'))
        && num(11, 2, 23).is_some()
        && b.get(13) == Some(&b':')
        && num(14, 2, 59).is_some()
        && b.get(16) == Some(&b':')
        && num(17, 2, 60).is_some();
    if !date_time {
        return false;
    }
    let mut at = 19;
    if b.get(at) == Some(&b'.') {
        let fraction = b[at + 1..]
            .iter()
            .take_while(|d| d.is_ascii_digit())
            .count();
        if !(1..=9).contains(&fraction) {
            return false;
        }
        at += 1 + fraction;
    }
    match &b[at..] {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', ..] if b.len() == at + 6 => {
            num(at + 1, 2, 23).is_some() && b[at + 3] == b':' && num(at + 4, 2, 59).is_some()
        }
        _ => false,
    }
}

/// Percent-decodes a query name or value once, `+` as space.
fn decode(text: &str) -> Result<Cow<'_, str>, QueryError> {
    percent::decode(text, true).map_err(|why| {
        QueryError::Malformed(match why {
            Malformed::Escape => "malformed percent-escape in the query string",
            Malformed::Utf8 => "the query string is not valid UTF-8",
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_needs_a_zone_and_fields_in_range() {
        for good in [
            "2024-01-31T12:00:00Z",
            "2024-01-31T12:00:00.000Z",
            "2024-01-31T12:00:00.123456+02:00",
            "2024-01-31t12:00:00-05:30",
        ] {
            assert!(rfc3339(good), "{good}");
        }
        for bad in [
            "",
            "2024-01-31",
            "2024-01-31T12:00:00",
            "2024-13-01T00:00:00Z",
            "2024-01-31T24:00:00Z",
            "2024-01-31T12:00:00.Z",
            "2024-01-31T12:00:00+0200",
            "2024-01-31T12:00:00Z ",
            "1706702400",
        ] {
            assert!(!rfc3339(bad), "{bad}");
        }
    }
}
