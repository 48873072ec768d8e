//! cors: which browser origins may read our responses, and the preflight.
//!
//! Architecture invariant: CORS headers are added in one place, after the
//! response is made, so errors carry them exactly like successes do.

use crate::http::server::Response;

/// Request headers a browser may send (API.md, "CORS").
const ALLOW_HEADERS: &str =
    "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, X-Audit-Log-Reason";
/// Response headers a page's script may read (API.md, "CORS").
const EXPOSE_HEADERS: &str = "Retry-After, Idempotency-Key, Idempotent-Replayed";
/// Seconds a browser may cache a preflight answer.
const MAX_AGE_SECS: u32 = 600;

pub struct Cors {
    origins: CorsOrigins,
}

impl Cors {
    pub fn new(origins: CorsOrigins) -> Self {
        Cors { origins }
    }

    /// Adds `Access-Control-Allow-Origin` and `-Expose-Headers` (and `Vary:
    /// Origin` when the answer depends on it) for an allowed origin;
    /// nothing for a disallowed one.
    pub fn apply(&self, origin: Option<&str>, response: &mut Response) {
        match &self.origins {
            CorsOrigins::Any => response.header("Access-Control-Allow-Origin", "*"),
            CorsOrigins::List(allowed) => {
                response.header("Vary", "Origin");
                match origin.filter(|o| allowed.iter().any(|a| a == o)) {
                    Some(origin) => response.header("Access-Control-Allow-Origin", origin),
                    None => return,
                }
            }
        }
        response.header("Access-Control-Expose-Headers", EXPOSE_HEADERS);
    }

    /// The answer to `OPTIONS` on an `/api/` path; `methods` are the path's
    /// own (the API's route table knows them, not this module).
    pub fn preflight(&self, methods: &'static str) -> Response {
        let mut response = Response::no_content();
        response.header("Access-Control-Allow-Methods", methods);
        response.header("Access-Control-Allow-Headers", ALLOW_HEADERS);
        response.header("Access-Control-Max-Age", MAX_AGE_SECS.to_string());
        response
    }
}

/// Which browser origins may read responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<String>),
}

/// `--cors-origins`: `*`, or a comma-separated list of origins.
pub fn parse_origins(value: &str) -> Result<CorsOrigins, String> {
    if value.trim() == "*" {
        return Ok(CorsOrigins::Any);
    }
    let mut origins = Vec::new();
    for origin in value.split(',').map(str::trim) {
        let well_formed = (origin.starts_with("http://") || origin.starts_with("https://"))
            && !origin.ends_with('/')
            && origin.bytes().all(|b| b.is_ascii_graphic());
        if !well_formed {
            return Err(format!(
                "`{origin}` is not an origin like https://example.com (no path, no trailing slash)"
            ));
        }
        origins.push(origin.to_string());
    }
    Ok(CorsOrigins::List(origins))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin_header(cors: &Cors, origin: Option<&str>) -> Option<String> {
        let mut r = Response::json(200, b"{}".to_vec());
        cors.apply(origin, &mut r);
        r.get_header("Access-Control-Allow-Origin")
            .map(str::to_string)
    }

    #[test]
    fn star_by_default() {
        let cors = Cors::new(CorsOrigins::Any);
        assert_eq!(
            origin_header(&cors, Some("https://x.example")).as_deref(),
            Some("*")
        );
        assert_eq!(origin_header(&cors, None).as_deref(), Some("*"));
    }

    #[test]
    fn a_listed_origin_is_echoed_and_others_get_nothing() {
        let cors = Cors::new(CorsOrigins::List(vec!["https://a.example".into()]));
        assert_eq!(
            origin_header(&cors, Some("https://a.example")).as_deref(),
            Some("https://a.example")
        );
        assert_eq!(origin_header(&cors, Some("https://evil.example")), None);
        assert_eq!(origin_header(&cors, None), None);
    }
}
