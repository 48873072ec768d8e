//! percent: percent-encoding, the one way this service reads client text
//! out of URLs and headers and writes it into Discord's (RFC 3986).
//!
//! Why one module: the query parsers of the API and of the passthrough, the
//! audit-log reason and its check all decode or encode; a second decoder
//! that disagrees with the first on `+` or a bad escape is how smuggling
//! starts.

use std::borrow::Cow;
use std::fmt::Write;

/// Why text could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A `%` not followed by two hex digits.
    Escape,
    /// The decoded bytes are not UTF-8.
    Utf8,
}

/// Percent-decodes once; `plus_is_space` reads `+` as a space, as forms and
/// `URLSearchParams` send query strings. A bad escape or a result that is
/// not UTF-8 is refused, not guessed at.
pub fn decode(text: &str, plus_is_space: bool) -> Result<Cow<'_, str>, Malformed> {
    let special = |b: u8| b == b'%' || (plus_is_space && b == b'+');
    if !text.bytes().any(special) {
        return Ok(Cow::Borrowed(text));
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Two hex digits exactly: `from_str_radix` would also take
                // a sign (`%+A`).
                let byte = match bytes.get(i + 1..i + 3) {
                    Some(&[high, low]) => match (hex(high), hex(low)) {
                        (Some(high), Some(low)) => high << 4 | low,
                        _ => return Err(Malformed::Escape),
                    },
                    _ => return Err(Malformed::Escape),
                };
                out.push(byte);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| Malformed::Utf8)
}

/// A hex digit's value.
pub fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether a byte passes unencoded: RFC 3986's unreserved characters.
pub fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encodes every byte but the unreserved ones (as discord.js and
/// twilight encode an audit-log reason; it also keeps CR and LF out of a
/// header).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if unreserved(b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Client text bounded and made printable for an error message.
pub fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_once_and_refuses_what_it_cannot() {
        assert_eq!(decode("a%20b+c", true).unwrap(), "a b c");
        assert_eq!(decode("a%20b+c", false).unwrap(), "a b+c");
        assert_eq!(decode("%2541", true).unwrap(), "%41");
        assert_eq!(decode("%4", true), Err(Malformed::Escape));
        assert_eq!(decode("%zz", true), Err(Malformed::Escape));
        assert_eq!(decode("%+A", true), Err(Malformed::Escape));
        assert_eq!(decode("%ff", true), Err(Malformed::Utf8));
        assert!(matches!(decode("plain", true), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn encodes_all_but_unreserved_characters() {
        assert_eq!(encode("a b&c=d#é~"), "a%20b%26c%3Dd%23%C3%A9~");
        assert_eq!(encode("x\r\ny"), "x%0D%0Ay");
    }

    #[test]
    fn printable_text_is_bounded_without_controls() {
        assert_eq!(printable("a\nb"), "a?b");
        assert_eq!(printable(&"x".repeat(100)).len(), 64);
    }
}
