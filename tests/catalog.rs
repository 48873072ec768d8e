//! The Discord route catalog behind the passthrough: the generated table is
//! the generator's output, hostile paths never match, groups follow API.md
//! ("Discord passthrough"), and paths and queries sent to Discord are rebuilt
//! from validated values.
//!
//! contract: API.md "Discord passthrough"; WRITES-NOTES.md §5.2, §7.5.

use std::path::Path;
use std::process::Command;

use discord_bot_backend::discord::catalog::{
    self, BodyKind, Found, Group, Method, OPERATIONS, QueryError, Refused,
};

const SPEC: &str = "../shared/discord-api-spec/openapi.json";

fn found<'a>(method: &str, path: &'a str) -> Found<'a> {
    catalog::find(method, path).unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
}

fn group(method: &str, path: &str) -> Group {
    found(method, path).op.group
}

fn op(method: &str, path: &str) -> &'static catalog::Operation {
    found(method, path).op
}

fn assert_malformed(method: &str, path: &str) {
    match catalog::find(method, path) {
        Err(Refused::Malformed(_)) => {}
        other => panic!("{method} {path:?}: expected Malformed, got {other:?}"),
    }
}

#[test]
fn committed_table_is_the_generators_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = root.join(SPEC);
    assert!(
        spec.exists(),
        "Discord's OpenAPI description is missing at {}: the table cannot be checked \
         (clone discord/discord-api-spec there)",
        spec.display()
    );
    let output = Command::new("python3")
        .arg(root.join("scripts/gen_discord_routes.py"))
        .arg(&spec)
        .current_dir(root)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 (needed to check the generated route table): {e}")
        });
    assert!(
        output.status.success(),
        "scripts/gen_discord_routes.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let committed = std::fs::read(root.join("src/discord/catalog/table.rs")).unwrap();
    assert!(
        output.stdout == committed,
        "src/discord/catalog/table.rs is not the generator's output: \
         run `python3 scripts/gen_discord_routes.py --write` and review the diff"
    );
}

#[test]
fn oauth2_only_operations_are_left_out() {
    assert!(catalog::find("GET", "/users/@me/guilds/1/member").is_err());
    for oauth2_only in [
        "/users/@me/applications/{application_id}/role-connection",
        "/users/@me/applications/{application_id}/entitlements",
        "/users/@me/guilds/{guild_id}/member",
    ] {
        assert!(
            !OPERATIONS.iter().any(|op| op.template == oauth2_only),
            "{oauth2_only}"
        );
    }
}

// Hostile paths (WRITES-NOTES §5.2): refused before any template is tried.

#[test]
fn dot_segments_are_refused_raw_or_encoded() {
    for path in [
        "/channels/1/messages/..",
        "/channels/1/../guilds/2",
        "/channels/./1",
        "/channels/1/%2e%2e/guilds",
        "/channels/1/%2E%2E",
        "/channels/1/.%2e",
        "/channels/1/messages/%2E",
    ] {
        assert_malformed("GET", path);
    }
}

#[test]
fn encoded_separators_and_nul_are_refused() {
    for path in [
        "/channels/1%2Fmessages",
        "/channels/1%2fmessages",
        "/channels/1/messages%5C2",
        "/channels/1/messages%5c2",
        "/channels/1%00/messages",
    ] {
        assert_malformed("GET", path);
    }
}

#[test]
fn empty_segments_and_a_trailing_slash_are_refused() {
    for path in [
        "/channels//messages",
        "//channels/1",
        "/channels/1/messages/",
        "/",
        "",
    ] {
        assert_malformed("GET", path);
    }
}

#[test]
fn backslash_control_and_non_ascii_bytes_are_refused() {
    for path in [
        "/channels/1\\messages",
        "/channels/1/mess\u{7}ages",
        "/channels/1/messages\u{7f}",
        "/channels/1/messages\t",
        "/channels/１/messages",
        "/channels/1/messages/2/reactions/👍/@me",
    ] {
        assert_malformed("GET", path);
    }
}

#[test]
fn query_or_fragment_characters_inside_the_path_are_refused() {
    assert_malformed("GET", "/channels/1/messages?limit=1");
    assert_malformed("GET", "/channels/1/messages#x");
}

#[test]
fn bad_percent_escapes_are_refused() {
    for path in ["/channels/1/%zz", "/channels/1/%2", "/channels/1%"] {
        assert_malformed("GET", path);
    }
}

#[test]
fn paths_over_512_bytes_or_12_segments_are_refused() {
    let long = format!("/channels/{}", "1".repeat(510));
    assert_malformed("GET", &long);
    assert_malformed("GET", &"/a".repeat(13));
}

#[test]
fn literal_segments_are_case_sensitive() {
    assert!(catalog::find("GET", "/users/@me").is_ok());
    for (method, path) in [
        ("GET", "/users/@ME"),
        ("GET", "/Users/@me"),
        ("PUT", "/channels/1/messages/2/reactions/%F0%9F%91%8D/@ME"),
        ("GET", "/channels/1/MESSAGES"),
    ] {
        let refused = catalog::find(method, path);
        assert!(
            matches!(refused, Err(Refused::NotFound | Refused::Malformed(_))),
            "{method} {path}: {refused:?}"
        );
    }
}

#[test]
fn snowflakes_in_the_path_must_fit_u64() {
    assert_eq!(
        found("GET", "/channels/18446744073709551615").discord_path(),
        "/channels/18446744073709551615"
    );
    for path in [
        "/channels/18446744073709551616",
        "/channels/123456789012345678901",
        "/channels/-1",
        "/channels/%31",
    ] {
        assert!(catalog::find("GET", path).is_err(), "{path}");
    }
}

#[test]
fn unknown_paths_are_not_found() {
    for path in ["/nope", "/channels/1/nope", "/guilds/1/channels/2/3"] {
        assert_eq!(
            catalog::find("GET", path).unwrap_err(),
            Refused::NotFound,
            "{path}"
        );
    }
}

#[test]
fn method_not_allowed_lists_the_methods_of_the_path() {
    assert_eq!(
        catalog::find("POST", "/channels/1").unwrap_err(),
        Refused::MethodNotAllowed {
            allow: "GET, PATCH, DELETE".into()
        }
    );
    assert_eq!(
        catalog::find("OPTIONS", "/channels/1/messages").unwrap_err(),
        Refused::MethodNotAllowed {
            allow: "GET, POST".into()
        }
    );
    // Methods are case-sensitive.
    assert!(matches!(
        catalog::find("get", "/channels/1"),
        Err(Refused::MethodNotAllowed { .. })
    ));
}

// Groups (API.md "Discord passthrough").

#[test]
fn never_routes_are_in_the_table_as_never() {
    for (method, path) in [
        ("PATCH", "/applications/@me"),
        ("PUT", "/applications/1/commands"),
        ("POST", "/webhooks/1/Abc_token-123"),
        ("PATCH", "/webhooks/1/Abc_token-123/messages/@original"),
        ("POST", "/interactions/1/Abc_token-123/callback"),
        ("GET", "/gateway/bot"),
        ("GET", "/gateway"),
        ("PATCH", "/users/@me"),
        ("DELETE", "/users/@me/guilds/1"),
        ("POST", "/lobbies"),
    ] {
        assert_eq!(group(method, path), Group::Never, "{method} {path}");
    }
}

#[test]
fn group_samples_follow_the_rules() {
    for (method, path, expected) in [
        ("POST", "/channels/1/messages", Group::Messaging),
        (
            "PUT",
            "/channels/1/messages/2/reactions/%F0%9F%91%8D/@me",
            Group::Messaging,
        ),
        ("POST", "/channels/1/typing", Group::Messaging),
        ("POST", "/users/@me/channels", Group::Messaging),
        ("GET", "/guilds/1/channels", Group::Read),
        ("GET", "/users/@me", Group::Read),
        ("GET", "/channels/1/messages", Group::Read),
        ("PUT", "/guilds/1/bans/2", Group::Moderation),
        ("PUT", "/guilds/1/members/2/roles/3", Group::Moderation),
        ("DELETE", "/guilds/1/members/2", Group::Moderation),
        ("POST", "/guilds/1/bulk-ban", Group::Moderation),
        ("POST", "/guilds/1/channels", Group::Admin),
        ("DELETE", "/channels/1", Group::Admin),
        ("POST", "/guilds/1/prune", Group::Admin),
    ] {
        assert_eq!(group(method, path), expected, "{method} {path}");
    }
}

#[test]
fn webhook_reads_are_admin_because_they_return_tokens() {
    assert_eq!(group("GET", "/channels/1/webhooks"), Group::Admin);
    assert_eq!(group("GET", "/guilds/1/webhooks"), Group::Admin);
    assert_eq!(group("GET", "/webhooks/1"), Group::Admin);
}

// What reaches Discord.

#[test]
fn discord_path_is_rebuilt_from_validated_values() {
    // Snowflake::parse accepts leading zeros; the integer is what is sent.
    assert_eq!(
        found("GET", "/channels/0001/messages/002").discord_path(),
        "/channels/1/messages/2"
    );
    assert_eq!(found("GET", "/users/@me").discord_path(), "/users/@me");
}

#[test]
fn emoji_is_decoded_once_and_reencoded() {
    let f = found("PUT", "/channels/1/messages/2/reactions/%f0%9f%91%8d/@me");
    assert_eq!(
        f.discord_path(),
        "/channels/1/messages/2/reactions/%F0%9F%91%8D/@me"
    );
    let custom = found("PUT", "/channels/1/messages/2/reactions/blob%3A123/@me");
    assert_eq!(
        custom.discord_path(),
        "/channels/1/messages/2/reactions/blob:123/@me"
    );
    let raw_colon = found("DELETE", "/channels/1/messages/2/reactions/blob:0123/3");
    assert_eq!(
        raw_colon.discord_path(),
        "/channels/1/messages/2/reactions/blob:123/3"
    );
}

#[test]
fn double_encoded_or_ascii_emoji_is_refused_as_invalid() {
    for emoji in ["%25F0%259F%2591%258D", "abc", "%20", "a%3Ab"] {
        let path = format!("/channels/1/messages/2/reactions/{emoji}/@me");
        assert_eq!(
            catalog::find("PUT", &path).unwrap_err(),
            Refused::Malformed(
                "invalid emoji: a percent-encoded Unicode emoji, encoded once, or a custom emoji `name:id`"
            ),
            "{emoji}"
        );
    }
}

#[test]
fn codes_and_small_integers_are_checked() {
    assert_eq!(
        found("GET", "/invites/abc-DEF123").discord_path(),
        "/invites/abc-DEF123"
    );
    assert_malformed("GET", "/invites/abc%20def");
    assert_malformed("GET", "/invites/a_b");
    assert_eq!(
        found("GET", "/channels/1/polls/2/answers/10").discord_path(),
        "/channels/1/polls/2/answers/10"
    );
    assert_malformed("GET", "/channels/1/polls/2/answers/11");
    assert_malformed("GET", "/channels/1/polls/2/answers/0");
}

#[test]
fn top_level_id_is_the_first_channel_guild_or_webhook_id() {
    let f = found("PUT", "/guilds/7/members/8/roles/9");
    assert_eq!(f.top_level_id(), Some(7));
    let key = f.route_key();
    assert_eq!(
        key.template,
        "PUT /guilds/:guild_id/members/:user_id/roles/:role_id"
    );
    assert_eq!(key.top_level, Some(7));
    assert_eq!(
        found("GET", "/channels/5/messages/6").top_level_id(),
        Some(5)
    );
    assert_eq!(found("GET", "/webhooks/4").top_level_id(), Some(4));
    assert_eq!(found("GET", "/users/@me").top_level_id(), None);
}

#[test]
fn route_keys_match_the_first_class_routes() {
    // The same call through the passthrough and through `Route` must start
    // in the same rate-limit bucket.
    assert_eq!(
        found("GET", "/channels/1/messages").route_key().template,
        "GET /channels/:channel_id/messages"
    );
    assert_eq!(
        found("GET", "/users/@me/guilds").route_key().template,
        "GET /users/@me/guilds"
    );
}

#[test]
fn body_kinds_come_from_the_spec() {
    assert_eq!(
        op("POST", "/channels/1/messages").body,
        BodyKind::JsonOrMultipart
    );
    assert_eq!(op("PUT", "/guilds/1/bans/2").body, BodyKind::Json);
    assert_eq!(op("GET", "/channels/1").body, BodyKind::None);
    assert_eq!(op("POST", "/guilds/1/stickers").body, BodyKind::Multipart);
    assert_eq!(op("POST", "/channels/1/messages").method, Method::Post);
    assert_eq!(
        op("POST", "/channels/1/messages").operation_id,
        "create_message"
    );
}

// Query strings.

#[test]
fn empty_query_is_empty() {
    assert_eq!(
        catalog::query(op("GET", "/channels/1/messages"), ""),
        Ok(String::new())
    );
}

#[test]
fn unknown_query_parameters_are_refused_naming_them() {
    let err = catalog::query(op("GET", "/channels/1/messages"), "limit=5&evil=1").unwrap_err();
    assert!(matches!(&err, QueryError::Unknown { name, .. } if name == "evil"));
    let text = err.to_string();
    assert!(
        text.contains("`evil`") && text.contains("`limit`"),
        "{text}"
    );
    // A decoded name is still unknown: no smuggling `&` or `?` through %26.
    assert!(matches!(
        catalog::query(op("GET", "/channels/1/messages"), "limit%3D5%26x=1"),
        Err(QueryError::Unknown { .. })
    ));
    assert!(matches!(
        catalog::query(op("GET", "/channels/1"), "x=1"),
        Err(QueryError::Unknown { .. })
    ));
}

#[test]
fn declared_query_parameters_are_canonicalised_in_declared_order() {
    let messages = op("GET", "/channels/1/messages");
    assert_eq!(
        catalog::query(messages, "limit=050&before=000123").unwrap(),
        "before=123&limit=50"
    );
    let guild = op("GET", "/guilds/1");
    assert_eq!(
        catalog::query(guild, "with_counts=1").unwrap(),
        "with_counts=true"
    );
    assert_eq!(
        catalog::query(guild, "with_counts=false").unwrap(),
        "with_counts=false"
    );
}

#[test]
fn query_values_out_of_type_or_range_are_refused_in_words() {
    let messages = op("GET", "/channels/1/messages");
    for bad in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=1e2",
        "before=abc",
        "after=1.0",
    ] {
        let err = catalog::query(messages, bad).unwrap_err();
        assert!(matches!(err, QueryError::Invalid { .. }), "{bad}: {err:?}");
    }
    assert_eq!(
        catalog::query(messages, "limit=101")
            .unwrap_err()
            .to_string(),
        "`limit` must be an integer from 1 to 100"
    );
    assert!(matches!(
        catalog::query(op("GET", "/guilds/1"), "with_counts=yes"),
        Err(QueryError::Invalid { .. })
    ));
}

#[test]
fn a_parameter_given_twice_is_refused() {
    assert_eq!(
        catalog::query(op("GET", "/channels/1/messages"), "limit=5&limit=6"),
        Err(QueryError::Repeated { name: "limit" })
    );
}

#[test]
fn empty_optional_value_counts_as_absent_and_required_ones_are_enforced() {
    let messages = op("GET", "/channels/1/messages");
    assert_eq!(
        catalog::query(messages, "before=&limit=2").unwrap(),
        "limit=2"
    );
    let search = op("GET", "/guilds/1/members/search");
    assert_eq!(
        catalog::query(search, "limit=5"),
        Err(QueryError::Missing { name: "query" })
    );
    assert_eq!(
        catalog::query(search, "query="),
        Err(QueryError::Missing { name: "query" })
    );
}

#[test]
fn text_values_are_decoded_once_and_reencoded() {
    let search = op("GET", "/guilds/1/members/search");
    assert_eq!(
        catalog::query(search, "query=a%26b+c%25&limit=10").unwrap(),
        "limit=10&query=a%26b%20c%25"
    );
    assert!(matches!(
        catalog::query(search, "query=a%0Ab"),
        Err(QueryError::Invalid { .. })
    ));
    assert!(matches!(
        catalog::query(search, "query=%zz"),
        Err(QueryError::Malformed(_))
    ));
}

#[test]
fn enumerations_and_timestamps_are_checked() {
    let reactions = op("GET", "/channels/1/messages/2/reactions/%F0%9F%91%8D");
    assert_eq!(catalog::query(reactions, "type=1").unwrap(), "type=1");
    assert!(catalog::query(reactions, "type=2").is_err());
    let pins = op("GET", "/channels/1/messages/pins");
    assert_eq!(
        catalog::query(pins, "before=2024-01-31T12:00:00.000Z").unwrap(),
        "before=2024-01-31T12%3A00%3A00.000Z"
    );
    assert!(catalog::query(pins, "before=yesterday").is_err());
    let search = op("GET", "/guilds/1/messages/search");
    assert_eq!(
        catalog::query(search, "sort_order=asc").unwrap(),
        "sort_order=asc"
    );
    assert!(catalog::query(search, "sort_order=ASC").is_err());
}

#[test]
fn list_parameters_repeat_within_their_bounds() {
    let search = op("GET", "/guilds/1/messages/search");
    assert_eq!(
        catalog::query(search, "author_id=2&author_id=01").unwrap(),
        "author_id=2&author_id=1"
    );
    assert!(matches!(
        catalog::query(search, "author_id=2&author_id=2"),
        Err(QueryError::Duplicate { .. })
    ));
    let many: Vec<String> = (1..=101).map(|i| format!("author_id={i}")).collect();
    assert!(matches!(
        catalog::query(search, &many.join("&")),
        Err(QueryError::TooMany { .. })
    ));
    assert!(matches!(
        catalog::query(search, "has=link&has=nope"),
        Err(QueryError::Invalid { .. })
    ));
}

#[test]
fn comma_lists_of_snowflakes_are_sent_comma_separated() {
    let prune = op("GET", "/guilds/1/prune");
    assert_eq!(
        catalog::query(prune, "include_roles=3,04&days=7&include_roles=5").unwrap(),
        "days=7&include_roles=3,4,5"
    );
    assert!(matches!(
        catalog::query(prune, "include_roles=3,,4"),
        Err(QueryError::Invalid { .. })
    ));
}

#[test]
fn an_encoded_at_in_a_literal_segment_matches_it() {
    let found = catalog::find("GET", "/users/%40me").expect("discord.js sends /users/%40me");
    assert_eq!(found.discord_path(), "/users/@me");
    assert!(catalog::find("GET", "/users/%40ME").is_err());
    assert!(catalog::find("GET", "/users/%4").is_err());
}
