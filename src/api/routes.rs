//! routes: the route table: which path and method is which endpoint, the
//! `Allow` header of a known path, and the metrics label of a path.
//!
//! Architecture invariant: this table is the only list of routes; the
//! OpenAPI document is checked against it (`tests/openapi.rs`), and nothing
//! else matches on paths.

use crate::api::error::ApiError;
use crate::api::passthrough::PREFIX as PASSTHROUGH;
use crate::api::query::printable;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Login,
    Logout,
    Guilds,
    Members,
    Channels,
    Messages,
    SendMessage,
    EditMessage,
    DeleteMessage,
    BulkDelete,
    AddReaction,
    RemoveReaction,
    SendDm,
    Typing,
    /// `/api/discord/v10/...`: any allowed Discord operation.
    Passthrough,
    /// The bot's Gateway events as a Server-Sent Events stream.
    Events,
    /// The bot's Gateway connection state.
    Gateway,
    /// A single-use ticket for a stream without headers.
    Ticket,
    Healthz,
    OpenApi,
    Metrics,
}

impl Endpoint {
    /// Whether answering it calls Discord for the session's bot (and so
    /// takes a place in the bot's in-flight gate first).
    pub(super) fn calls_discord(self) -> bool {
        !matches!(
            self,
            Endpoint::Login
                | Endpoint::Logout
                | Endpoint::Healthz
                | Endpoint::OpenApi
                | Endpoint::Metrics
                | Endpoint::Events
                | Endpoint::Gateway
                | Endpoint::Ticket
        )
    }
}

/// A path, its `Allow` header, and the method each endpoint on it serves.
struct Path {
    path: &'static str,
    allow: &'static str,
    endpoints: &'static [(&'static str, Endpoint)],
}

/// The route table.
const ROUTES: &[Path] = &[
    Path {
        path: "/api/auth/login",
        allow: "POST, OPTIONS",
        endpoints: &[("POST", Endpoint::Login)],
    },
    Path {
        path: "/api/auth/logout",
        allow: "POST, OPTIONS",
        endpoints: &[("POST", Endpoint::Logout)],
    },
    Path {
        path: "/api/guilds",
        allow: "GET, OPTIONS",
        endpoints: &[("GET", Endpoint::Guilds)],
    },
    Path {
        path: "/api/members",
        allow: "GET, OPTIONS",
        endpoints: &[("GET", Endpoint::Members)],
    },
    Path {
        path: "/api/channels",
        allow: "GET, OPTIONS",
        endpoints: &[("GET", Endpoint::Channels)],
    },
    Path {
        path: "/api/messages",
        allow: "GET, POST, PATCH, DELETE, OPTIONS",
        endpoints: &[
            ("GET", Endpoint::Messages),
            ("POST", Endpoint::SendMessage),
            ("PATCH", Endpoint::EditMessage),
            ("DELETE", Endpoint::DeleteMessage),
        ],
    },
    Path {
        path: "/api/messages/bulk-delete",
        allow: "POST, OPTIONS",
        endpoints: &[("POST", Endpoint::BulkDelete)],
    },
    Path {
        path: "/api/reactions",
        allow: "PUT, DELETE, OPTIONS",
        endpoints: &[
            ("PUT", Endpoint::AddReaction),
            ("DELETE", Endpoint::RemoveReaction),
        ],
    },
    Path {
        path: "/api/dm",
        allow: "POST, OPTIONS",
        endpoints: &[("POST", Endpoint::SendDm)],
    },
    Path {
        path: "/api/typing",
        allow: "POST, OPTIONS",
        endpoints: &[("POST", Endpoint::Typing)],
    },
    Path {
        path: "/api/events",
        allow: "GET, OPTIONS",
        endpoints: &[("GET", Endpoint::Events)],
    },
    Path {
        path: "/api/events/tickets",
        allow: "POST, OPTIONS",
        endpoints: &[("POST", Endpoint::Ticket)],
    },
    Path {
        path: "/api/gateway",
        allow: "GET, OPTIONS",
        endpoints: &[("GET", Endpoint::Gateway)],
    },
    Path {
        path: "/api/openapi.json",
        allow: "GET, OPTIONS",
        endpoints: &[("GET", Endpoint::OpenApi)],
    },
    Path {
        path: "/healthz",
        allow: "GET",
        endpoints: &[("GET", Endpoint::Healthz)],
    },
    Path {
        path: "/metrics",
        allow: "GET",
        endpoints: &[("GET", Endpoint::Metrics)],
    },
];

/// The passthrough's path in the OpenAPI document, and its methods.
const PASSTHROUGH_DOCUMENTED: &str = "/api/discord/v10/{discordPath}";
const PASSTHROUGH_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
const PASSTHROUGH_ALLOW: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";

/// This service's own API as an OpenAPI 3.1 document, served as is.
/// `tests/openapi.rs` checks it against [`route_table`].
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every (method, path) the router serves, CORS preflights aside: what the
/// OpenAPI document must describe, no more and no less.
pub fn route_table() -> impl Iterator<Item = (&'static str, &'static str)> {
    ROUTES
        .iter()
        .flat_map(|p| p.endpoints.iter().map(|(method, _)| (*method, p.path)))
        .chain(
            PASSTHROUGH_METHODS
                .iter()
                .map(|method| (*method, PASSTHROUGH_DOCUMENTED)),
        )
}

/// Every method an `/api/` path serves, for the preflight of a path that is
/// not a route (the unit test below holds it to the table).
const ANY_API_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";

fn find(path: &str) -> Option<&'static Path> {
    ROUTES.iter().find(|p| p.path == path)
}

/// `Access-Control-Allow-Methods` of a preflight on `path`: the path's own
/// methods, from the table (API.md, "CORS").
pub(super) fn preflight_methods(path: &str) -> &'static str {
    if path.starts_with(PASSTHROUGH) {
        return PASSTHROUGH_ALLOW;
    }
    find(path).map_or(ANY_API_METHODS, |p| p.allow)
}

/// The metrics label of a path: its route, or one label for every path that
/// is not a route, so clients cannot create series.
pub(super) fn route_label(path: &str) -> &'static str {
    if path.starts_with(PASSTHROUGH) {
        return PASSTHROUGH_DOCUMENTED;
    }
    find(path).map_or("unmatched", |p| p.path)
}

/// Which endpoint serves the request. Under `/api/discord/` every method
/// of Discord's is the passthrough; which operation, if any, is for it to
/// say.
pub(super) fn resolve(method: &str, path: &str) -> Result<Endpoint, ApiError> {
    if path.starts_with(PASSTHROUGH) {
        return if PASSTHROUGH_METHODS.contains(&method) {
            Ok(Endpoint::Passthrough)
        } else {
            Err(ApiError::MethodNotAllowed {
                allow: PASSTHROUGH_ALLOW,
            })
        };
    }
    let route = find(path)
        .ok_or_else(|| ApiError::not_found(format!("no such route: {}", printable(path))))?;
    route
        .endpoints
        .iter()
        .find(|(served, _)| *served == method)
        .map(|(_, endpoint)| *endpoint)
        .ok_or(ApiError::MethodNotAllowed { allow: route.allow })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preflight_names_the_paths_own_methods() {
        assert_eq!(preflight_methods("/api/auth/login"), "POST, OPTIONS");
        assert_eq!(preflight_methods("/api/guilds"), "GET, OPTIONS");
        let mut all: Vec<&str> = route_table()
            .filter(|(_, path)| path.starts_with("/api/") && !path.starts_with(PASSTHROUGH))
            .map(|(method, _)| method)
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
            resolve("PUT", "/api/messages"),
            Err(ApiError::MethodNotAllowed {
                allow: "GET, POST, PATCH, DELETE, OPTIONS"
            })
        );
        assert_eq!(
            resolve("DELETE", "/api/guilds"),
            Err(ApiError::MethodNotAllowed {
                allow: "GET, OPTIONS"
            })
        );
        assert_eq!(resolve("GET", "/api/guilds"), Ok(Endpoint::Guilds));
        assert_eq!(resolve("PATCH", "/api/messages"), Ok(Endpoint::EditMessage));
    }

    #[test]
    fn each_paths_allow_header_lists_exactly_its_methods() {
        for route in ROUTES {
            let mut methods: Vec<&str> = route.endpoints.iter().map(|(m, _)| *m).collect();
            if route.path.starts_with("/api/") {
                methods.push("OPTIONS");
            }
            assert_eq!(route.allow, methods.join(", "), "{}", route.path);
        }
    }
}
