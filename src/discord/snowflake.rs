//! snowflake: Discord IDs, parsed at the edge.
//!
//! Architecture invariant: a `Snowflake` can only be made by `parse` (or from
//! Discord's own JSON), so anything typed `Snowflake` is 1 to 20 ASCII digits
//! that fit a u64. Discord URLs are built from these and validated integers
//! only, which is what keeps client input out of Discord URLs.

use std::fmt;

/// A Discord snowflake ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Snowflake(u64);

impl Snowflake {
    /// Parses 1 to 20 ASCII digits that fit a u64. No sign, no spaces, no
    /// other characters: `str::parse::<u64>` would accept a leading `+`.
    pub fn parse(text: &str) -> Option<Snowflake> {
        if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse::<u64>().ok().map(Snowflake)
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Snowflake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_digits_that_fit_u64() {
        assert_eq!(Snowflake::parse("0").map(Snowflake::get), Some(0));
        assert_eq!(
            Snowflake::parse("18446744073709551615").map(Snowflake::get),
            Some(u64::MAX)
        );
        assert_eq!(Snowflake::parse("00012").map(Snowflake::get), Some(12));
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1.0",
            "0x10",
            "../1",
            "%2e%2e",
            "1?a=b",
            "1#x",
            "18446744073709551616",
            "123456789012345678901",
            "１２３",
        ] {
            assert_eq!(Snowflake::parse(bad), None, "{bad:?}");
        }
    }
}
