//! routes: the route table: which path and method is which endpoint, the
//! `Allow` header of a known path, and the metrics label of a path.
//!
//! Architecture invariant: this table is the only list of routes; the
//! OpenAPI document is checked against it (`tests/openapi.rs`), and nothing
//! else matches on paths.

use crate::api::error::ApiError;
use crate::api::query::printable;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Login,
    Logout,
    Guilds,
    Members,
    Channels,
    Messages,
    Healthz,
    OpenApi,
    Metrics,
}

/// The route table: path, the method it serves, and what it is.
const ROUTES: &[(&str, &str, Endpoint)] = &[
    ("/api/auth/login", "POST", Endpoint::Login),
    ("/api/auth/logout", "POST", Endpoint::Logout),
    ("/api/guilds", "GET", Endpoint::Guilds),
    ("/api/members", "GET", Endpoint::Members),
    ("/api/channels", "GET", Endpoint::Channels),
    ("/api/messages", "GET", Endpoint::Messages),
    ("/api/openapi.json", "GET", Endpoint::OpenApi),
    ("/healthz", "GET", Endpoint::Healthz),
    ("/metrics", "GET", Endpoint::Metrics),
];

/// This service's own API as an OpenAPI 3.1 document, served as is.
/// `tests/openapi.rs` checks it against [`route_table`].
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every (method, path) the router serves, CORS preflights aside: what the
/// OpenAPI document must describe, no more and no less.
pub fn route_table() -> impl Iterator<Item = (&'static str, &'static str)> {
    ROUTES.iter().map(|(path, method, _)| (*method, *path))
}

/// The `Allow` header for a known path: its method, plus the CORS preflight
/// on `/api/` paths.
fn allow_header(method: &str, path: &str) -> &'static str {
    match (method, path.starts_with("/api/")) {
        ("POST", true) => "POST, OPTIONS",
        ("GET", true) => "GET, OPTIONS",
        _ => "GET",
    }
}

/// Every method an `/api/` path serves, for the preflight of a path that is
/// not a route (the unit test below holds it to the table).
const ANY_API_METHODS: &str = "GET, POST, OPTIONS";

/// `Access-Control-Allow-Methods` of a preflight on `path`: the path's own
/// methods, from the table (API.md, "CORS").
pub(super) fn preflight_methods(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map_or(ANY_API_METHODS, |(_, served, _)| allow_header(served, path))
}

/// The metrics label of a path: its route, or one label for every path that
/// is not a route, so clients cannot create series.
pub(super) fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|(p, _, _)| *p == path)
        .map_or("unmatched", |(p, _, _)| p)
}

pub(super) fn resolve(method: &str, path: &str) -> Result<Endpoint, ApiError> {
    let (_, served, endpoint) = ROUTES
        .iter()
        .find(|(p, _, _)| *p == path)
        .ok_or_else(|| ApiError::not_found(format!("no such route: {}", printable(path))))?;
    if method == *served {
        Ok(*endpoint)
    } else {
        Err(ApiError::MethodNotAllowed {
            allow: allow_header(served, path),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preflight_names_the_paths_own_methods() {
        assert_eq!(preflight_methods("/api/auth/login"), "POST, OPTIONS");
        assert_eq!(preflight_methods("/api/guilds"), "GET, OPTIONS");
        let mut all: Vec<&str> = ROUTES
            .iter()
            .filter(|(path, _, _)| path.starts_with("/api/"))
            .map(|(_, method, _)| *method)
            .chain(["OPTIONS"])
            .collect();
        all.sort();
        all.dedup();
        let mut any: Vec<&str> = ANY_API_METHODS.split(", ").collect();
        any.sort();
        assert_eq!(any, all, "ANY_API_METHODS is the table's /api/ methods");
    }

    #[test]
    fn unknown_path_is_404_and_wrong_method_is_405_with_allow() {
        assert!(matches!(
            resolve("GET", "/api/nope"),
            Err(ApiError::NotFound { .. })
        ));
        assert_eq!(
            resolve("GET", "/api/auth/login"),
            Err(ApiError::MethodNotAllowed {
                allow: "POST, OPTIONS"
            })
        );
        assert_eq!(
            resolve("DELETE", "/api/guilds"),
            Err(ApiError::MethodNotAllowed {
                allow: "GET, OPTIONS"
            })
        );
        assert_eq!(resolve("GET", "/api/guilds"), Ok(Endpoint::Guilds));
    }
}
