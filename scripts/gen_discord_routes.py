#!/usr/bin/env python3
"""Generates src/discord/catalog/table.rs from Discord's OpenAPI description.

The passthrough (/api/discord/v10/...) serves only operations listed in that
table. Generating it keeps the binary free of the 1.2 MB spec, and committing
the output makes a spec update a reviewed diff: tests/catalog.rs runs this
script and fails when the committed table differs from its output.

    python3 scripts/gen_discord_routes.py [SPEC]          # print the table
    python3 scripts/gen_discord_routes.py [SPEC] --write  # rewrite table.rs

SPEC defaults to ../shared/discord-api-spec/openapi.json beside the repository.
Per-group counts go to stderr. Anything in the spec this script has no rule
for (a new path parameter, a query schema of a new shape) stops it with a
message, so that a spec update cannot widen what the passthrough accepts
without someone deciding how.

Standard library only; the output depends on the spec alone (no dates, no
absolute paths), so it is byte-for-byte reproducible.
"""

import argparse
import json
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SPEC = os.path.join(REPO, "..", "shared", "discord-api-spec", "openapi.json")
TABLE = os.path.join(REPO, "src", "discord", "catalog", "table.rs")

METHODS = ["get", "post", "put", "patch", "delete"]

# The spec writes these where Discord has no real bound ("maxLength: 152133",
# "maxItems: 1521"); taking them for limits would be wrong in both
# directions, so they count as "no limit declared".
PLACEHOLDER_MAX_LENGTH = 152133
PLACEHOLDER_MAX_ITEMS = 1521

# ---------------------------------------------------------------------------
# Route groups (API.md "Discord passthrough"; WRITES-NOTES.md §5.2, §7.5).
# Checked in this order; the first rule that applies decides.
# ---------------------------------------------------------------------------

# never: not served whatever --discord-routes says. Applications (commands,
# the interactions endpoint URL, entitlements), OAuth2, the social SDK
# (partner-sdk, lobbies), interaction callbacks and the Gateway are the
# application's business, not a session holder's.
NEVER_FIRST_SEGMENTS = {
    "applications",
    "oauth2",
    "partner-sdk",
    "lobbies",
    "interactions",
    "gateway",  # /gateway and /gateway/bot
}
# Routes that carry a secret in the URL: they take no bot token at all, and a
# secret in a path ends up in logs.
NEVER_PARAMS = {"webhook_token", "interaction_token"}
# Changes to the bot itself: its name and avatar, and leaving a server (which
# needs a re-invite by a server admin).
NEVER_EXACT = {
    ("PATCH", "/users/@me"),
    ("DELETE", "/users/@me/guilds/{guild_id}"),
}

# read: GETs, except those whose answer holds a secret: webhook objects carry
# the webhook's token, a permanent credential to post without the bot.
SECRET_READS = {
    "/channels/{channel_id}/webhooks",
    "/guilds/{guild_id}/webhooks",
    "/webhooks/{webhook_id}",
}

# messaging: writes to messages, reactions, pins, threads, typing, polls and
# soundboard sends in a channel, and opening a DM.
MESSAGING_PREFIX = re.compile(
    r"^/channels/\{channel_id\}/"
    r"(messages|typing|thread-members|threads|polls|pins|send-soundboard-sound)(/|$)"
)
MESSAGING_EXACT = {("POST", "/users/@me/channels")}

# moderation: writes to one member (roles, nickname, timeout, kick), the
# bot's own membership, and bans. Member role PUT/DELETE
# (/members/{user_id}/roles/{role_id}) fall under members/{user_id}.
MODERATION_PREFIX = re.compile(
    r"^/guilds/\{guild_id\}/(members/\{user_id\}|members/@me|bans|bulk-ban)(/|$)"
)


def group(method, template):
    """The route group of one operation; `admin` is what no rule claims."""
    segments = template.strip("/").split("/")
    if segments[0] in NEVER_FIRST_SEGMENTS:
        return "Never"
    if any(s.strip("{}") in NEVER_PARAMS for s in segments if s.startswith("{")):
        return "Never"
    if (method, template) in NEVER_EXACT:
        return "Never"
    if method == "GET":
        return "Admin" if template in SECRET_READS else "Read"
    if MESSAGING_PREFIX.match(template) or (method, template) in MESSAGING_EXACT:
        return "Messaging"
    if MODERATION_PREFIX.match(template):
        return "Moderation"
    return "Admin"


# ---------------------------------------------------------------------------
# Path parameters
# ---------------------------------------------------------------------------

SNOWFLAKE_REF = "#/components/schemas/SnowflakeType"


def path_kind(name, schema):
    """The Rust `PathKind` of a path parameter. Unknown string parameters
    stop the script: a free-form string must never reach a Discord URL."""
    if schema.get("$ref") == SNOWFLAKE_REF:
        return "PathKind::Snowflake"
    if name == "emoji_name":
        return "PathKind::Emoji"
    # Invite and guild-template codes: [A-Za-z0-9-]{1,32}.
    if name == "code":
        return "PathKind::Code"
    # Secrets and opaque ids, only on never-group routes; matched so that the
    # caller can say "never served" instead of "unknown route".
    if name in ("webhook_token", "interaction_token", "instance_id"):
        return "PathKind::Opaque"
    if schema.get("type") == "integer" and "minimum" in schema and "maximum" in schema:
        return "PathKind::Int {{ min: {}, max: {} }}".format(schema["minimum"], schema["maximum"])
    sys.exit("gen_discord_routes: no rule for path parameter {!r} {}".format(name, json.dumps(schema)))


# ---------------------------------------------------------------------------
# Query parameters
# ---------------------------------------------------------------------------


class Spec:
    def __init__(self, doc):
        self.doc = doc

    def resolve(self, schema):
        """Follows $ref chains (local references only)."""
        seen = 0
        while "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith("#/"):
                sys.exit("gen_discord_routes: non-local $ref " + ref)
            node = self.doc
            for part in ref[2:].split("/"):
                node = node[part]
            schema = node
            seen += 1
            if seen > 16:
                sys.exit("gen_discord_routes: $ref loop at " + ref)
        return schema

    def is_snowflake(self, schema):
        return schema.get("$ref") == SNOWFLAKE_REF or self.resolve(schema).get("format") == "snowflake"

    def consts(self, schema):
        """The values of an enumeration written as oneOf of consts (the
        spec's style), or as enum; None when the schema is no enumeration."""
        schema = self.resolve(schema)
        if "oneOf" in schema and all("const" in s for s in schema["oneOf"]):
            return [s["const"] for s in schema["oneOf"]]
        if schema.get("enum"):
            return list(schema["enum"])
        # `{"type": "string", "enum": [], "allOf": [{"$ref": ...}]}`: an empty
        # enum beside an allOf of the real one (GET /guilds/{guild_id}/requests
        # `status`). Read literally, nothing is valid; the allOf is meant.
        if schema.get("enum") == [] and len(schema.get("allOf", [])) == 1:
            return self.consts(schema["allOf"][0])
        return None

    def query_kind(self, where, schema):
        """The Rust `QueryKind` expression of a query parameter's schema."""
        raw = schema
        schema = self.resolve(schema)
        if self.is_snowflake(raw):
            return "QueryKind::Snowflake"
        values = self.consts(raw)
        if values is not None:
            if all(isinstance(v, str) for v in values):
                return "QueryKind::OneOf(&[{}])".format(", ".join(rust_str(v) for v in values))
            if all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFF_FFFF for v in values):
                return "QueryKind::IntOneOf(&[{}])".format(", ".join(str(v) for v in values))
            sys.exit("gen_discord_routes: {}: mixed enumeration {}".format(where, values))
        kind = schema.get("type")
        if kind == "boolean":
            return "QueryKind::Boolean"
        if kind == "integer":
            low = schema.get("minimum")
            high = schema.get("maximum")
            if low is None or low < 0:
                # Every integer query parameter of v10 is >= 0; a signed one
                # would need a decision (and a wider type).
                sys.exit("gen_discord_routes: {}: integer without a minimum >= 0".format(where))
            high = "u64::MAX" if high is None else str(high)
            return "QueryKind::Integer {{ min: {}, max: {} }}".format(low, high)
        if kind == "string" and schema.get("format") == "date-time":
            return "QueryKind::DateTime"
        if kind == "string" and set(schema) <= {"type", "minLength", "maxLength"}:
            low = schema.get("minLength", 0)
            high = schema.get("maxLength")
            high = "None" if high in (None, PLACEHOLDER_MAX_LENGTH) else "Some({})".format(high)
            return "QueryKind::Text {{ min_len: {}, max_len: {} }}".format(low, high)
        if kind == "array":
            return self.list_kind(where, schema, comma=False)
        # oneOf [string, array of (null |) snowflakes]: Discord documents these
        # (sku_ids, include_roles) as a comma-delimited list of snowflakes;
        # both forms are accepted and sent on as the comma-delimited one.
        if "oneOf" in schema and len(schema["oneOf"]) == 2:
            text, array = schema["oneOf"]
            if self.resolve(text).get("type") == "string" and self.resolve(array).get("type") == "array":
                return self.list_kind(where, self.resolve(array), comma=True)
        sys.exit("gen_discord_routes: {}: no rule for query schema {}".format(where, json.dumps(raw)))

    def list_kind(self, where, schema, comma):
        items = schema["items"]
        if "oneOf" in items:
            # A null alternative adds nothing a query string can say.
            alternatives = [s for s in items["oneOf"] if s.get("type") != "null"]
            if len(alternatives) != 1:
                sys.exit("gen_discord_routes: {}: list items {}".format(where, json.dumps(items)))
            items = alternatives[0]
        max_items = schema.get("maxItems")
        if max_items is None or max_items == PLACEHOLDER_MAX_ITEMS or max_items > 0xFFFF:
            sys.exit("gen_discord_routes: {}: list without a real maxItems".format(where))
        if comma:
            if not self.is_snowflake(items):
                sys.exit("gen_discord_routes: {}: comma list of non-snowflakes".format(where))
            return "QueryKind::SnowflakeCsv {{ max_items: {} }}".format(max_items)
        item = self.query_kind(where + "[]", items)
        if item.startswith("QueryKind::List") or item.startswith("QueryKind::SnowflakeCsv"):
            sys.exit("gen_discord_routes: {}: nested list".format(where))
        unique = "true" if schema.get("uniqueItems") else "false"
        return "QueryKind::List {{ item: &{}, max_items: {}, unique: {} }}".format(item, max_items, unique)


# ---------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------


def body_kind(op):
    """What Content-Type the passthrough may forward. Form-urlencoded, which
    the spec also lists on some routes, is never forwarded (API.md: JSON or
    multipart, else 415)."""
    body = op.get("requestBody")
    if not body:
        return "BodyKind::None"
    types = set(body.get("content", {}))
    json_ok = "application/json" in types
    multipart = "multipart/form-data" in types
    if json_ok and multipart:
        return "BodyKind::JsonOrMultipart"
    if json_ok:
        return "BodyKind::Json"
    if multipart:
        return "BodyKind::Multipart"
    sys.exit("gen_discord_routes: no rule for body types {}".format(sorted(types)))


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def rust_str(text):
    if not re.fullmatch(r"[\x20-\x7e]*", text):
        sys.exit("gen_discord_routes: non-printable text {!r}".format(text))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def accepts_bot_token(op):
    return any("BotToken" in requirement for requirement in op.get("security") or [])


def spec_version(spec_path, doc):
    """The spec's commit (its VERSION file, as the discord-api-spec
    repository ships it) or else info.version."""
    version_file = os.path.join(os.path.dirname(spec_path), "VERSION")
    if os.path.exists(version_file):
        with open(version_file, encoding="utf-8") as f:
            text = f.read().strip()
        if text:
            return "commit " + text
    return "info.version " + str(doc.get("info", {}).get("version", "?"))


def operations(doc):
    spec = Spec(doc)
    out = []
    for template, item in doc["paths"].items():
        common = {(p["name"], p["in"]): p for p in item.get("parameters", [])}
        for method in METHODS:
            op = item.get(method)
            if op is None or not accepts_bot_token(op):
                continue
            params = dict(common)
            params.update({(p["name"], p["in"]): p for p in op.get("parameters", [])})
            params = {k: (spec.resolve(p) if "$ref" in p else p) for k, p in params.items()}
            upper = method.upper()
            segments = []
            for segment in template.strip("/").split("/"):
                if segment.startswith("{") and segment.endswith("}"):
                    name = segment[1:-1]
                    declared = params.get((name, "path"))
                    if declared is None:
                        sys.exit("gen_discord_routes: {} {}: undeclared {}".format(upper, template, name))
                    segments.append(("param", name, path_kind(name, declared["schema"])))
                else:
                    if not re.fullmatch(r"[A-Za-z0-9@._-]+", segment):
                        sys.exit("gen_discord_routes: odd literal segment {!r}".format(segment))
                    segments.append(("lit", segment, None))
            query = []
            for (name, where), p in params.items():
                if where == "path":
                    continue
                if where != "query":
                    sys.exit("gen_discord_routes: {} {}: parameter in {}".format(upper, template, where))
                kind = spec.query_kind("{} {} ?{}".format(upper, template, name), p["schema"])
                query.append((name, kind, bool(p.get("required"))))
            if len(query) > 64:
                sys.exit("gen_discord_routes: more than 64 query parameters (the matcher's bit set)")
            route_key = "{} /{}".format(
                upper,
                "/".join(":" + s[1] if s[0] == "param" else s[1] for s in segments),
            )
            out.append(
                {
                    "method": upper,
                    "template": template,
                    "route_key": route_key,
                    "operation_id": op["operationId"],
                    "group": group(upper, template),
                    "segments": segments,
                    "query": query,
                    "body": body_kind(op),
                }
            )
    # By first segment, then segment count, then template: a path is only
    # tried against the templates of its shape (INDEX), the ops of one
    # template sit together (one bind per template, the Allow list), and a
    # literal sorts before a parameter ('{' is after every literal
    # character), so a literal would win a tie (check_unambiguous says
    # there is none).
    method_order = {m.upper(): i for i, m in enumerate(METHODS)}
    out.sort(key=lambda o: (o["segments"][0][1], len(o["segments"]), o["template"], method_order[o["method"]]))
    return out


def check_unambiguous(ops):
    """Two templates a path could match at once would make the answer depend
    on table order; none exists in v10 among servable routes, and a spec
    that adds one must be looked at."""
    digits = re.compile(r"[0-9]{1,20}")
    code = re.compile(r"[A-Za-z0-9-]{1,32}")
    opaque = re.compile(r"[A-Za-z0-9_-]{1,256}")

    def may_match(segment, literal):
        kind = segment[2]
        if kind == "PathKind::Snowflake" or kind.startswith("PathKind::Int"):
            return bool(digits.fullmatch(literal))
        if kind == "PathKind::Code":
            return bool(code.fullmatch(literal))
        if kind == "PathKind::Opaque":
            return bool(opaque.fullmatch(literal))
        return True  # Emoji: anything

    templates = {}
    for op in ops:
        templates.setdefault(op["template"], op)
    found = []
    items = list(templates.values())
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            if len(a["segments"]) != len(b["segments"]):
                continue
            overlap = True
            for x, y in zip(a["segments"], b["segments"]):
                if x[0] == "lit" and y[0] == "lit":
                    overlap = x[1] == y[1]
                elif x[0] == "lit":
                    overlap = may_match(y, x[1])
                elif y[0] == "lit":
                    overlap = may_match(x, y[1])
                if not overlap:
                    break
            if overlap and not (a["group"] == "Never" and b["group"] == "Never"):
                found.append((a["template"], b["template"]))
    return found


def render(ops, version):
    lines = []
    w = lines.append
    w("// @generated by scripts/gen_discord_routes.py from Discord's OpenAPI description")
    w("// (discord/discord-api-spec, " + version + ").")
    w("// Do not edit: run `python3 scripts/gen_discord_routes.py --write` after")
    w("// updating ../shared/discord-api-spec; tests/catalog.rs checks this file")
    w("// against the script's output.")
    w("")
    w("use super::{BodyKind, Group, Method, Operation, PathKind, PathParam, QueryKind, QueryParam, Seg};")
    w("")
    max_params = max(sum(1 for s in o["segments"] if s[0] == "param") for o in ops)
    w("/// The most path parameters any template has.")
    w("pub const MAX_PARAMS: usize = {};".format(max_params))
    w("")
    w("/// Every operation of the spec that accepts a bot token, sorted by first")
    w("/// segment, segment count, template and method.")
    w("pub static OPERATIONS: [Operation; {}] = [".format(len(ops)))
    for o in ops:
        w("    Operation {")
        w("        method: Method::{},".format(o["method"].capitalize()))
        w("        template: {},".format(rust_str(o["template"])))
        w("        route_key: {},".format(rust_str(o["route_key"])))
        w("        operation_id: {},".format(rust_str(o["operation_id"])))
        w("        group: Group::{},".format(o["group"]))
        w("        segments: &[")
        for s in o["segments"]:
            if s[0] == "lit":
                w("            Seg::Lit({}),".format(rust_str(s[1])))
            else:
                w("            Seg::Param(PathParam {{ name: {}, kind: {} }}),".format(rust_str(s[1]), s[2]))
        w("        ],")
        if o["query"]:
            w("        query: &[")
            for name, kind, required in o["query"]:
                w(
                    "            QueryParam {{ name: {}, kind: {}, required: {} }},".format(
                        rust_str(name), kind, "true" if required else "false"
                    )
                )
            w("        ],")
        else:
            w("        query: &[],")
        w("        body: {},".format(o["body"]))
        w("    },")
    w("];")
    w("")
    # The index the matcher walks: templates (each a run of operations, one
    # per method), and for each (first segment, segment count) the run of
    # templates a path of that shape can only be one of.
    templates = []
    for i, o in enumerate(ops):
        if templates and ops[templates[-1][0]]["template"] == o["template"]:
            templates[-1][1] = i + 1
        else:
            templates.append([i, i + 1])
    index = []
    for t, (start, _) in enumerate(templates):
        shape = (ops[start]["segments"][0][1], len(ops[start]["segments"]))
        if index and index[-1][0] == shape:
            index[-1][2] = t + 1
        else:
            index.append([shape, t, t + 1])
    w("/// Each template's run of operations in `OPERATIONS` (start, end).")
    w("pub static TEMPLATES: [(u16, u16); {}] = [".format(len(templates)))
    for start, stop in templates:
        w("    ({}, {}),".format(start, stop))
    w("];")
    w("")
    w("/// Each (first segment, segment count): its run in `TEMPLATES` (start,")
    w("/// end), sorted by first segment, then count.")
    w("pub static INDEX: [(&str, u8, u16, u16); {}] = [".format(len(index)))
    for (first, count), start, stop in index:
        w("    ({}, {}, {}, {}),".format(rust_str(first), count, start, stop))
    w("];")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=DEFAULT_SPEC, help="path of openapi.json")
    parser.add_argument("--write", action="store_true", help="write " + os.path.relpath(TABLE, REPO))
    args = parser.parse_args()
    with open(args.spec, encoding="utf-8") as f:
        doc = json.load(f)
    ops = operations(doc)
    ambiguous = check_unambiguous(ops)
    if ambiguous:
        sys.exit("gen_discord_routes: templates a path could match at once: {}".format(ambiguous))
    text = render(ops, spec_version(args.spec, doc))
    counts = {}
    for o in ops:
        counts[o["group"]] = counts.get(o["group"], 0) + 1
    order = ["Read", "Messaging", "Moderation", "Admin", "Never"]
    print(
        "gen_discord_routes: {} operations: {}".format(
            len(ops), ", ".join("{} {}".format(g.lower(), counts.get(g, 0)) for g in order)
        ),
        file=sys.stderr,
    )
    if args.write:
        with open(TABLE, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
