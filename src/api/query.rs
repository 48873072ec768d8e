//! query: the query string of a client request, parsed into typed values.
//!
//! Parse, don't validate: a handler asks for `snowflake("guildId")` or
//! `integer("limit", 1..=1000, 100)` and gets a typed value or a 400 naming
//! the parameter. An empty value counts as absent (API.md), a parameter given
//! twice is refused rather than guessed at, and percent-escapes are decoded
//! first, so `%2e%2e` is seen (and refused) as `..`.

use std::borrow::Cow;
use std::ops::RangeInclusive;

use crate::api::error::ApiError;
use crate::discord::Snowflake;
pub use crate::discord::percent::printable;
use crate::discord::percent::{self, Malformed};

/// Parameters beyond this many are refused: no route takes more than five.
const MAX_PARAMS: usize = 32;

/// Names and values borrow the request's text unless an escape had to be
/// decoded.
#[derive(Debug, Default)]
pub struct Query<'a> {
    params: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    pub fn parse(raw: &'a str) -> Result<Query<'a>, ApiError> {
        let mut params = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name)?;
            let value = decode(value)?;
            if params.iter().any(|(n, _)| *n == name) {
                return Err(ApiError::bad_request(format!(
                    "query parameter `{}` is given more than once",
                    printable(&name)
                )));
            }
            if params.len() == MAX_PARAMS {
                return Err(ApiError::bad_request("too many query parameters"));
            }
            params.push((name, value));
        }
        Ok(Query { params })
    }

    /// The value, with an empty one counted as absent.
    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| &**v)
            .filter(|v| !v.is_empty())
    }

    /// A text parameter, decoded once; empty counts as absent.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name)
    }

    pub fn snowflake(&self, name: &str) -> Result<Option<Snowflake>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(text) => Snowflake::parse(text).map(Some).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`{name}` must be a Discord ID: 1 to 20 digits that fit an unsigned 64-bit integer"
                ))
            }),
        }
    }

    pub fn required_snowflake(&self, name: &str) -> Result<Snowflake, ApiError> {
        self.snowflake(name)?
            .ok_or_else(|| ApiError::bad_request(format!("`{name}` is required")))
    }

    pub fn integer(
        &self,
        name: &str,
        range: RangeInclusive<u16>,
        default: u16,
    ) -> Result<u16, ApiError> {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
        let out_of_range = || {
            ApiError::bad_request(format!(
                "`{name}` must be an integer from {} to {}",
                range.start(),
                range.end()
            ))
        };
        if text.len() > 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(out_of_range());
        }
        let n: u32 = text.parse().map_err(|_| out_of_range())?;
        u16::try_from(n)
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(out_of_range)
    }
}

/// Percent-decodes (and `+` to space, as forms do). Invalid escapes and
/// non-UTF-8 results are a 400, not a guess.
fn decode(text: &str) -> Result<Cow<'_, str>, ApiError> {
    percent::decode(text, true).map_err(|why| {
        ApiError::bad_request(match why {
            Malformed::Escape => "malformed percent-escape in the query string",
            Malformed::Utf8 => "query string is not valid UTF-8",
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_optional_value_counts_as_absent() {
        let q = Query::parse("before=&limit=").unwrap();
        assert_eq!(q.snowflake("before").unwrap(), None);
        assert_eq!(q.integer("limit", 1..=100, 50).unwrap(), 50);
    }

    #[test]
    fn empty_required_value_is_refused() {
        let q = Query::parse("channelId=").unwrap();
        assert!(q.required_snowflake("channelId").is_err());
    }

    #[test]
    fn escapes_are_decoded_before_validation() {
        let q = Query::parse("a=%31%32&b=%2e%2e").unwrap();
        assert_eq!(q.snowflake("a").unwrap().map(Snowflake::get), Some(12));
        assert!(q.snowflake("b").is_err());
        assert!(Query::parse("a=%zz").is_err());
        assert!(Query::parse("a=%ff").is_err());
    }

    #[test]
    fn repeated_parameter_is_refused() {
        assert!(Query::parse("limit=1&limit=2").is_err());
    }

    #[test]
    fn integers_outside_the_range_are_refused() {
        let q = Query::parse("a=0&b=1001&c=-1&d=99999999999&e=1000").unwrap();
        for name in ["a", "b", "c", "d"] {
            assert!(q.integer(name, 1..=1000, 1).is_err(), "{name}");
        }
        assert_eq!(q.integer("e", 1..=1000, 1).unwrap(), 1000);
    }
}
