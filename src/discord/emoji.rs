//! emoji: the reaction emoji a client names, parsed at the edge.
//!
//! Discord takes a reaction's emoji as a path segment: a Unicode emoji,
//! percent-encoded, or a custom emoji as `name:id` (`resources/message.mdx`,
//! "Create Reaction": "The emoji must be URL Encoded or the request will fail
//! with 10014: Unknown Emoji. To use custom emoji, you must encode it in the
//! format `name:id`"). `a:name:id`, the animated form of message text, is not
//! an API form and is refused.
//!
//! Invariant: an `Emoji` can only be made by `parse`, from text already
//! percent-decoded exactly once, and its only way into a URL is `encoded()`,
//! which escapes every byte that is not an ASCII letter or digit. So text that
//! was double-encoded (a `%` left after one decoding) is refused rather than
//! sent on, and nothing a client writes can add a segment, a query or a
//! fragment to a Discord URL. Both `/api/reactions?emoji=` and the passthrough
//! use it, so the two agree on what an emoji is.

use std::fmt::{self, Write};

use crate::discord::snowflake::Snowflake;

/// Longest Unicode emoji accepted, in bytes. The longest RGI sequences
/// (families, tagged flags) are under 40 bytes; Discord's own bound is
/// undocumented.
pub const MAX_UNICODE_BYTES: usize = 64;

/// Longest custom emoji name: Discord's `name` is 2 to 32 characters of
/// `[A-Za-z0-9_]`; 1 is accepted because Discord only reads the id.
pub const MAX_NAME_BYTES: usize = 32;

/// A validated reaction emoji. Kept inline (no heap): the passthrough parses
/// one per reaction call, and `Copy` keeps a matched route cheap to pass.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Emoji {
    /// The Unicode emoji, or the custom emoji's name.
    text: [u8; MAX_UNICODE_BYTES],
    len: u8,
    /// Set for a custom emoji.
    id: Option<Snowflake>,
}

impl Emoji {
    /// Parses text that was percent-decoded exactly once.
    ///
    /// A Unicode emoji is 1 to 64 bytes with no ASCII at all: ASCII is where
    /// every separator and escape lives (`/`, `?`, `#`, `%`, space), and no
    /// emoji needs it, with one exception: the keycaps (`1️⃣`, `#️⃣`, `*️⃣`),
    /// whose first character is the ASCII digit, `#` or `*`, allowed only
    /// right before U+FE0F U+20E3 or U+20E3 (polls and counters react with
    /// them). A custom emoji is `name:id`, the name of `[A-Za-z0-9_]`.
    pub fn parse(decoded: &str) -> Option<Emoji> {
        if let Some((name, id)) = decoded.split_once(':') {
            return Emoji::custom(name, id);
        }
        if decoded.is_empty() || decoded.len() > MAX_UNICODE_BYTES || !unicode_only(decoded) {
            return None;
        }
        Some(Emoji::inline(decoded, None))
    }

    fn custom(name: &str, id: &str) -> Option<Emoji> {
        let name_ok = !name.is_empty()
            && name.len() <= MAX_NAME_BYTES
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let id = Snowflake::parse(id)?;
        name_ok.then(|| Emoji::inline(name, Some(id)))
    }

    fn inline(text: &str, id: Option<Snowflake>) -> Emoji {
        let mut buf = [0; MAX_UNICODE_BYTES];
        buf[..text.len()].copy_from_slice(text.as_bytes());
        Emoji {
            text: buf,
            len: text.len() as u8,
            id,
        }
    }

    /// The Unicode emoji, or the custom emoji's name.
    pub fn name(&self) -> &str {
        // Only `parse` fills `text`, from a `&str`, so this cannot fail.
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or_default()
    }

    /// The custom emoji's id; `None` for a Unicode emoji.
    pub fn id(&self) -> Option<Snowflake> {
        self.id
    }

    /// The path segment for Discord. Unicode emoji are percent-encoded byte by
    /// byte, everything but ASCII letters and digits (as twilight's
    /// `NON_ALPHANUMERIC`). A custom emoji is written `name:id` with the `:`
    /// raw: `:` is allowed in a path segment (RFC 3986 `pchar`), twilight
    /// sends it so (`RequestReactionType`'s `Display`), Discord takes it, and
    /// the name and id hold nothing that needs escaping.
    pub fn encoded(&self) -> String {
        let mut out = String::with_capacity(usize::from(self.len) * 3 + 21);
        self.write_encoded(&mut out);
        out
    }

    /// `encoded()` appended to `out`, for building a path without a second
    /// allocation.
    pub fn write_encoded(&self, out: &mut String) {
        match self.id {
            Some(id) => {
                out.push_str(self.name());
                out.push(':');
                // Writing to a String cannot fail.
                let _ = write!(out, "{id}");
            }
            None => {
                for &b in self.name().as_bytes() {
                    if b.is_ascii_alphanumeric() {
                        out.push(char::from(b));
                    } else {
                        let _ = write!(out, "%{b:02X}");
                    }
                }
            }
        }
    }
}

impl fmt::Debug for Emoji {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "Emoji({}:{id})", self.name()),
            None => write!(f, "Emoji({})", self.name()),
        }
    }
}

/// No ASCII, except a keycap's first character (see `Emoji::parse`).
fn unicode_only(text: &str) -> bool {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_ascii() {
            continue;
        }
        if !matches!(c, '0'..='9' | '#' | '*') {
            return false;
        }
        if chars.next_if_eq(&'\u{FE0F}').is_some() {
            // Fully qualified keycap: base, VS16, U+20E3.
        }
        if chars.next_if_eq(&'\u{20E3}').is_none() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_emoji_is_percent_encoded_byte_by_byte() {
        let thumbs = Emoji::parse("👍").unwrap();
        assert_eq!(thumbs.encoded(), "%F0%9F%91%8D");
        assert_eq!(thumbs.id(), None);
    }

    #[test]
    fn zwj_sequence_keeps_every_byte() {
        let flag = Emoji::parse("🏳️‍🌈").unwrap();
        assert_eq!(flag.encoded(), "%F0%9F%8F%B3%EF%B8%8F%E2%80%8D%F0%9F%8C%88");
    }

    #[test]
    fn custom_emoji_is_name_colon_id_with_a_raw_colon() {
        let custom = Emoji::parse("name:123").unwrap();
        assert_eq!(custom.encoded(), "name:123");
        assert_eq!(custom.name(), "name");
        assert_eq!(custom.id().map(Snowflake::get), Some(123));
        assert_eq!(Emoji::parse("blob_2:0042").unwrap().encoded(), "blob_2:42");
    }

    #[test]
    fn keycaps_are_the_one_place_ascii_is_allowed() {
        assert_eq!(
            Emoji::parse("1\u{FE0F}\u{20E3}").unwrap().encoded(),
            "1%EF%B8%8F%E2%83%A3"
        );
        assert_eq!(Emoji::parse("#\u{20E3}").unwrap().encoded(), "%23%E2%83%A3");
        for bad in ["1", "#", "1\u{FE0F}", "a\u{20E3}", "👍1"] {
            assert_eq!(Emoji::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn double_encoded_text_is_refused() {
        assert_eq!(Emoji::parse("%F0%9F%91%8D"), None);
        assert_eq!(Emoji::parse("👍%20"), None);
    }

    #[test]
    fn ascii_separators_spaces_and_controls_are_refused() {
        for bad in [
            "a b",
            "👍 ",
            "👍/",
            "👍?",
            "👍#",
            "👍.",
            "..",
            "👍\u{0}",
            "👍\n",
            "\\",
            "abc",
        ] {
            assert_eq!(Emoji::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn empty_and_too_long_are_refused() {
        assert_eq!(Emoji::parse(""), None);
        let long = "👍".repeat(MAX_UNICODE_BYTES / 4 + 1);
        assert_eq!(Emoji::parse(&long), None);
        assert!(Emoji::parse(&"👍".repeat(MAX_UNICODE_BYTES / 4)).is_some());
    }

    #[test]
    fn custom_emoji_needs_a_word_name_and_a_snowflake_id() {
        for bad in [
            "name:abc",
            "name:",
            ":123",
            "a:name:123",
            "na me:123",
            "name:-1",
            "name:18446744073709551616",
            "👍:123",
        ] {
            assert_eq!(Emoji::parse(bad), None, "{bad:?}");
        }
        let name = "n".repeat(MAX_NAME_BYTES);
        assert!(Emoji::parse(&format!("{name}:1")).is_some());
        assert_eq!(Emoji::parse(&format!("{name}n:1")), None);
    }
}
