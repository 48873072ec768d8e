//! contract: `GET /api/openapi.json` is this service's own API as an
//! OpenAPI 3.1 document, and it tells the truth: it documents every route the
//! router serves and nothing else, only statuses the service can answer, and
//! bodies the service really sends.
//!
//! The document is checked against `api::route_table()` and `ApiError`
//! here, at compile-and-test time; `make fuzz-api` (schemathesis) checks it
//! against generated requests.

mod support;

use std::collections::BTreeSet;

use discord_bot_backend::api::ApiError;
use discord_bot_backend::api::{OPENAPI, route_table};
use serde_json::Value;
use support::world::*;
use support::{Fake, Reply, Service};

const HTTP_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_str(OPENAPI).expect("src/openapi.json is JSON")
}

/// Every (METHOD, path) the document describes an operation for.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("`paths` is an object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item is an object");
            item.keys()
                .filter(|key| HTTP_METHODS.contains(&key.as_str()))
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

fn routes() -> BTreeSet<(String, String)> {
    route_table()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect()
}

/// Follows a local `$ref` (`#/components/...`) until it reaches the value.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local references are used: {reference}"));
            let target = doc
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling reference {reference}"));
            resolve(doc, target)
        }
        None => value,
    }
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    doc["paths"][path]
        .get(method.to_lowercase())
        .unwrap_or_else(|| panic!("{method} {path} is not documented"))
}

/// Every variant of the error type, each once. The match below stops
/// compiling when a variant is added, so this list cannot silently fall
/// behind `src/api/error.rs`.
fn every_error() -> Vec<ApiError> {
    let all = vec![
        ApiError::bad_request("x"),
        ApiError::Unauthorized("x"),
        ApiError::TokenRejected,
        ApiError::Forbidden {
            message: "x".into(),
            code: None,
            cached: true,
        },
        ApiError::not_found("x"),
        ApiError::MethodNotAllowed { allow: "GET" },
        ApiError::LengthRequired,
        ApiError::PayloadTooLarge { limit: 1 },
        ApiError::HeadTooLarge { limit: 1 },
        ApiError::RateLimited {
            message: "x".into(),
            retry_after: std::time::Duration::from_secs(1),
        },
        ApiError::Internal,
        ApiError::BadGateway("x".into()),
        ApiError::Unavailable("x".into()),
        ApiError::GatewayTimeout,
        ApiError::DiscordRejected {
            status: 400,
            rejection: discord_bot_backend::discord::error::Rejection {
                message: "x".into(),
                code: None,
                errors: None,
            },
        },
        ApiError::DiscordRejected {
            status: 413,
            rejection: discord_bot_backend::discord::error::Rejection {
                message: "x".into(),
                code: None,
                errors: None,
            },
        },
        ApiError::OutcomeUnknown {
            timeout: true,
            retry_safe: true,
            detail: "x".into(),
        },
        ApiError::OutcomeUnknown {
            timeout: false,
            retry_safe: false,
            detail: "x".into(),
        },
        ApiError::Performed { retry_safe: false },
        ApiError::KeyInUse {
            retry_after: std::time::Duration::from_secs(1),
        },
        ApiError::KeyReused,
        ApiError::UnsupportedMediaType("x"),
    ];
    for error in &all {
        match error {
            ApiError::BadRequest(_)
            | ApiError::Unauthorized(_)
            | ApiError::TokenRejected
            | ApiError::Forbidden { .. }
            | ApiError::NotFound { .. }
            | ApiError::MethodNotAllowed { .. }
            | ApiError::LengthRequired
            | ApiError::PayloadTooLarge { .. }
            | ApiError::HeadTooLarge { .. }
            | ApiError::RateLimited { .. }
            | ApiError::Internal
            | ApiError::BadGateway(_)
            | ApiError::Unavailable(_)
            | ApiError::GatewayTimeout
            | ApiError::DiscordRejected { .. }
            | ApiError::OutcomeUnknown { .. }
            | ApiError::Performed { .. }
            | ApiError::KeyInUse { .. }
            | ApiError::KeyReused
            | ApiError::UnsupportedMediaType(_) => {}
        }
    }
    all
}

#[test]
fn document_declares_openapi_3_1() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("`openapi` is a string");
    assert!(version.starts_with("3.1."), "openapi is {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
}

#[test]
fn served_document_is_the_embedded_one() {
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let reply = service.request("GET", "/api/openapi.json", &[], None);
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json(), document());
}

#[test]
fn every_route_is_documented() {
    let missing: Vec<_> = routes()
        .difference(&documented_operations(&document()))
        .cloned()
        .collect();
    assert!(missing.is_empty(), "routes the document lacks: {missing:?}");
}

#[test]
fn every_documented_operation_is_a_route() {
    let invented: Vec<_> = documented_operations(&document())
        .difference(&routes())
        .cloned()
        .collect();
    assert!(
        invented.is_empty(),
        "documented operations the router does not serve: {invented:?}"
    );
}

#[test]
fn documented_statuses_are_ones_the_service_answers() {
    let doc = document();
    let mut answerable: BTreeSet<u16> = every_error().iter().map(ApiError::status).collect();
    answerable.extend([200, 201, 204]);
    for (method, path) in documented_operations(&doc) {
        let responses = operation(&doc, &method, &path)["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} has no responses"));
        for status in responses.keys() {
            let code: u16 = status
                .parse()
                .unwrap_or_else(|_| panic!("{method} {path}: `{status}` is not an exact status"));
            assert!(
                answerable.contains(&code),
                "{method} {path} documents {code}, which the service never answers"
            );
        }
    }
}

#[test]
fn every_operation_documents_success_and_the_limits_of_the_http_front() {
    let doc = document();
    // The front refuses these before any route runs, so every route has them.
    let front = ["400", "411", "413", "431", "500", "503"];
    for (method, path) in documented_operations(&doc) {
        let responses = &operation(&doc, &method, &path)["responses"];
        assert!(
            responses
                .as_object()
                .unwrap()
                .keys()
                .any(|status| status.starts_with('2')),
            "{method} {path} documents no success"
        );
        for status in front {
            assert!(
                responses.get(status).is_some(),
                "{method} {path} does not document {status}"
            );
        }
    }
}

#[test]
fn operations_that_call_discord_document_its_failures() {
    let doc = document();
    for (method, path) in [
        ("POST", "/api/auth/login"),
        ("GET", "/api/guilds"),
        ("GET", "/api/members"),
        ("GET", "/api/channels"),
        ("GET", "/api/messages"),
        ("POST", "/api/messages"),
        ("PATCH", "/api/messages"),
        ("DELETE", "/api/messages"),
        ("POST", "/api/messages/bulk-delete"),
        ("PUT", "/api/reactions"),
        ("DELETE", "/api/reactions"),
        ("POST", "/api/dm"),
        ("POST", "/api/typing"),
    ] {
        let responses = &operation(&doc, method, path)["responses"];
        for status in ["401", "429", "502", "504"] {
            assert!(
                responses.get(status).is_some(),
                "{method} {path} calls Discord but does not document {status}"
            );
        }
    }
}

/// `--client-rate-limit` guards every `/api/` path; probes and scrapes are
/// exempt so they stay answerable during a flood.
#[test]
fn api_routes_document_the_client_rate_limit() {
    let doc = document();
    for (method, path) in documented_operations(&doc) {
        let limited = path.starts_with("/api/");
        let documents_429 = operation(&doc, &method, &path)["responses"]
            .get("429")
            .is_some();
        assert_eq!(documents_429, limited, "{method} {path}");
    }
}

#[test]
fn error_answers_are_documented_as_error_objects() {
    let doc = document();
    for (method, path) in documented_operations(&doc) {
        for (status, response) in operation(&doc, &method, &path)["responses"]
            .as_object()
            .unwrap()
        {
            if status.starts_with('2') {
                continue;
            }
            let schema = &resolve(&doc, response)["content"]["application/json"]["schema"];
            // The passthrough's errors are Discord's shape (API.md).
            let expected = if path.starts_with("/api/discord/") {
                "#/components/schemas/PassthroughError"
            } else {
                "#/components/schemas/Error"
            };
            assert_eq!(schema["$ref"], expected, "{method} {path} {status}");
        }
    }
}

#[test]
fn rate_limited_answers_document_retry_after() {
    let doc = document();
    for (method, path) in documented_operations(&doc) {
        if let Some(response) = operation(&doc, &method, &path)["responses"].get("429") {
            let header = resolve(&doc, &resolve(&doc, response)["headers"]["Retry-After"]);
            assert_eq!(header["required"], true, "{method} {path}");
        }
    }
}

#[test]
fn authenticated_routes_require_the_session_and_public_ones_do_not() {
    let doc = document();
    let scheme = &doc["components"]["securitySchemes"]["session"];
    assert_eq!(scheme["type"], "apiKey");
    assert_eq!(scheme["in"], "header");
    assert_eq!(scheme["name"], "Authorization");
    let public = [
        ("POST", "/api/auth/login"),
        ("GET", "/api/openapi.json"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
    ];
    for (method, path) in documented_operations(&doc) {
        let security = operation(&doc, &method, &path)
            .get("security")
            .unwrap_or(&doc["security"]);
        let is_public = public.contains(&(method.as_str(), path.as_str()));
        assert_eq!(
            security.as_array().is_some_and(Vec::is_empty),
            is_public,
            "{method} {path}: security is {security}"
        );
    }
}

#[test]
fn every_reference_resolves() {
    fn walk(doc: &Value, value: &Value) {
        match value {
            Value::Object(map) => {
                if map.contains_key("$ref") {
                    resolve(doc, value);
                }
                map.values().for_each(|v| walk(doc, v));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(doc, v)),
            _ => {}
        }
    }
    let doc = document();
    walk(&doc, &doc);
}

/// Where `value` breaks `schema`, for the JSON Schema keywords the document
/// uses on bodies: `$ref`, `type`, `const`, `required`, `properties`,
/// `items`, `oneOf`, `minimum`, `minLength`. `pattern` is left to
/// schemathesis (`make fuzz-api`), which validates with a full engine.
fn violations(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let schema = resolve(doc, schema);
    let mut out = Vec::new();
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            other => panic!("bad `type` {other}"),
        };
        let fits = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            other => panic!("unknown type {other}"),
        });
        if !fits {
            out.push(format!("{at}: {value} is not {types:?}"));
            return out;
        }
    }
    if schema
        .get("const")
        .is_some_and(|expected| value != expected)
    {
        out.push(format!("{at}: {value} is not {}", schema["const"]));
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), value.as_f64())
        && n < min
    {
        out.push(format!("{at}: {n} is below {min}"));
    }
    if let (Some(min), Some(text)) = (schema["minLength"].as_u64(), value.as_str())
        && (text.chars().count() as u64) < min
    {
        out.push(format!("{at}: {text:?} is shorter than {min}"));
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let matching = options
            .iter()
            .filter(|option| violations(doc, option, value, at).is_empty())
            .count();
        if matching != 1 {
            out.push(format!("{at}: {value} matches {matching} of oneOf"));
        }
    }
    if let Some(object) = value.as_object() {
        for field in schema["required"].as_array().into_iter().flatten() {
            let field = field.as_str().unwrap();
            if !object.contains_key(field) {
                out.push(format!("{at}: `{field}` is missing"));
            }
        }
        if let Some(properties) = schema["properties"].as_object() {
            for (name, property) in properties {
                if let Some(v) = object.get(name) {
                    out.extend(violations(doc, property, v, &format!("{at}.{name}")));
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (n, item) in array.iter().enumerate() {
            out.extend(violations(doc, items, item, &format!("{at}[{n}]")));
        }
    }
    out
}

/// Checks a real answer against what the document says `method path`
/// answers with that status: documented at all, its media type, its required
/// headers, and its body's schema.
fn assert_conforms(doc: &Value, method: &str, path: &str, reply: &Reply) {
    let documented = &operation(doc, method, path)["responses"][reply.status.to_string()];
    assert!(
        !documented.is_null(),
        "{method} {path} answered {}, which it does not document: {}",
        reply.status,
        reply.text
    );
    let response = resolve(doc, documented);
    for (name, header) in response["headers"].as_object().into_iter().flatten() {
        if resolve(doc, header)["required"] == true {
            assert!(
                reply.header(name).is_some(),
                "{method} {path} {}: no {name} header",
                reply.status
            );
        }
    }
    let schema = &response["content"]["application/json"]["schema"];
    if reply.status == 204 {
        assert!(
            schema.is_null() && reply.text.is_empty(),
            "{method} {path} 204"
        );
        return;
    }
    assert!(
        !schema.is_null(),
        "{method} {path} {} has no JSON body documented",
        reply.status
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let problems = violations(doc, schema, &reply.json(), "body");
    assert!(
        problems.is_empty(),
        "{method} {path} {}: {problems:#?}",
        reply.status
    );
}

#[test]
fn real_answers_match_the_documented_schemas() {
    let doc = document();
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let login = service.login(TOKEN);
    assert_conforms(&doc, "POST", "/api/auth/login", &login);
    let session = login.json()["sessionId"].as_str().unwrap().to_string();
    let get = |target: &str| service.get(target, &session);
    let cases = [
        ("/api/guilds", get("/api/guilds")),
        ("/api/members", get("/api/members?limit=3")),
        ("/api/channels", get("/api/channels")),
        (
            "/api/messages",
            get(&format!("/api/messages?channelId={GENERAL}&limit=3")),
        ),
        ("/healthz", get("/healthz")),
        ("/api/gateway", get("/api/gateway")),
        ("/api/openapi.json", get("/api/openapi.json")),
    ];
    for (path, reply) in &cases {
        assert_eq!(reply.status, 200, "{path}: {}", reply.text);
        assert!(reply.text.len() > 2, "{path} answered an empty list");
        assert_conforms(&doc, "GET", path, reply);
    }
    let logout = service.logout(&session);
    assert_eq!(logout.status, 200);
    assert_conforms(&doc, "POST", "/api/auth/logout", &logout);
}

#[test]
fn real_error_answers_match_the_documented_schemas() {
    let doc = document();
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let session = service.session(TOKEN);
    let multi = service.session(MULTI_TOKEN);
    let cases = [
        (
            "POST",
            "/api/auth/login",
            service.post_json("/api/auth/login", "{"),
        ),
        (
            "POST",
            "/api/auth/login",
            service.login("not-a-known-token"),
        ),
        ("GET", "/api/guilds", service.get("/api/guilds", "nope")),
        (
            "GET",
            "/api/members",
            service.get("/api/members?limit=0", &session),
        ),
        ("GET", "/api/members", service.get("/api/members", &multi)),
        (
            "GET",
            "/api/members",
            service.get(&format!("/api/members?guildId={GUILD}"), &multi),
        ),
        (
            "GET",
            "/api/messages",
            service.get(&format!("/api/messages?channelId={SECRET}"), &session),
        ),
        (
            "GET",
            "/api/messages",
            service.get("/api/messages?channelId=1", &session),
        ),
    ];
    let statuses: BTreeSet<u16> = cases.iter().map(|(_, _, reply)| reply.status).collect();
    assert_eq!(statuses, BTreeSet::from([400, 401, 403, 404]));
    for (method, path, reply) in &cases {
        assert_conforms(&doc, method, path, reply);
    }
}

#[test]
fn real_write_answers_match_the_documented_schemas() {
    let doc = document();
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &["--upstream-timeout", "300"]);
    let session = service.session(TOKEN);
    let write = |method: &str, target: &str, key: &str, body: Option<Value>| {
        let mut headers = vec![("Authorization", session.as_str())];
        if !key.is_empty() {
            headers.push(("Idempotency-Key", key));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        service.request(
            method,
            target,
            &headers,
            body.map(|b| b.to_string()).as_deref(),
        )
    };
    let send = format!("/api/messages?channelId={GENERAL}");
    let hello = serde_json::json!({"content": "hello"});
    let sent = write("POST", &send, "k1", Some(hello.clone()));
    let id = sent.json()["id"].as_str().unwrap().to_string();
    let one = format!("/api/messages?channelId={GENERAL}&messageId={id}");
    let mut cases = vec![
        ("POST", "/api/messages", sent),
        (
            "POST",
            "/api/messages",
            write("POST", &send, "k1", Some(hello.clone())),
        ),
        (
            "POST",
            "/api/messages",
            write(
                "POST",
                &send,
                "k1",
                Some(serde_json::json!({"content": "other"})),
            ),
        ),
        (
            "POST",
            "/api/messages",
            write("POST", &send, "", Some(serde_json::json!({}))),
        ),
        (
            "PATCH",
            "/api/messages",
            write(
                "PATCH",
                &one,
                "",
                Some(serde_json::json!({"content": "v2"})),
            ),
        ),
        (
            "PUT",
            "/api/reactions",
            write(
                "PUT",
                &format!("{one}&emoji=%F0%9F%91%8D").replace("/api/messages", "/api/reactions"),
                "",
                None,
            ),
        ),
        (
            "POST",
            "/api/typing",
            write(
                "POST",
                &format!("/api/typing?channelId={GENERAL}"),
                "",
                None,
            ),
        ),
        ("DELETE", "/api/messages", write("DELETE", &one, "", None)),
        ("DELETE", "/api/messages", write("DELETE", &one, "", None)),
    ];
    fake.fault(serde_json::json!({"kind": "write_then_hang", "ms": 1000, "count": 2}));
    cases.push((
        "POST",
        "/api/messages",
        write("POST", &send, "", Some(hello)),
    ));
    let statuses: BTreeSet<u16> = cases.iter().map(|(_, _, reply)| reply.status).collect();
    assert_eq!(
        statuses,
        BTreeSet::from([200, 201, 204, 400, 404, 422, 504])
    );
    for (method, path, reply) in &cases {
        assert_conforms(&doc, method, path, reply);
    }
}

#[test]
fn wrong_method_answer_matches_the_documented_method_not_allowed() {
    let doc = document();
    let fake = Fake::start(&standard());
    let service = Service::start(&fake, &[]);
    let reply = service.request("DELETE", "/api/guilds", &[], None);
    assert_eq!(reply.status, 405);
    let response = &doc["components"]["responses"]["MethodNotAllowed"];
    assert!(reply.header("allow").is_some());
    let schema = &response["content"]["application/json"]["schema"];
    assert!(violations(&doc, schema, &reply.json(), "body").is_empty());
}

#[test]
fn the_schema_check_finds_a_broken_body() {
    let doc = document();
    let message = serde_json::json!({"$ref": "#/components/schemas/Message"});
    let broken = serde_json::json!({"id": 7, "channel_id": "1", "type": 0, "content": ""});
    let problems = violations(&doc, &message, &broken, "body");
    assert!(
        problems.iter().any(|p| p.contains("body.id")),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| p.contains("`author` is missing")));
    assert!(
        problems
            .iter()
            .any(|p| p.contains("`timestamp` is missing"))
    );
}
