#!/usr/bin/env bash
# `make fuzz-api`: schemathesis against the service in front of the bundled
# fake Discord, driven by the service's own /api/openapi.json. Fails when a
# generated request gets a 5xx, a status or media type the document does not
# list, a body or header that breaks the document's schemas, or a wrong
# method that is not a 405 with `Allow`.
#
# Knobs (environment):
#   FUZZ_MAX_EXAMPLES  test cases per operation and phase (default 100, about
#                      two minutes; CI uses a short pass)
#   FUZZ_SEED          replay a run: schemathesis prints the seed it used
#   FUZZ_VENV          where schemathesis is installed (default target/fuzz-venv)
#   FUZZ_SERVICE_ARGS  extra flags for discord-bot-backend
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: schemathesis changes its checks between minor versions, and a CI
# run must not start failing because PyPI moved. 4.32.5 runs on Python 3.11.
SCHEMATHESIS_VERSION=4.32.5
max_examples=${FUZZ_MAX_EXAMPLES:-100}
venv=$(realpath -m "${FUZZ_VENV:-target/fuzz-venv}")
bin=target/release
logs=$(mktemp -d)
fake=
svc=

cleanup() {
  [ -n "$svc" ] && kill "$svc" 2>/dev/null
  [ -n "$fake" ] && kill "$fake" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# schemathesis in a venv of its own, so nothing touches the system Python.
# Debian ships venv separately (python3-venv); a clean CI machine may lack it.
python=$venv/bin/python
if ! "$python" -m schemathesis.cli --version 2>/dev/null | grep -q " $SCHEMATHESIS_VERSION\$"; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    fi
    python3 -m venv "$venv"
  fi
  "$python" -m pip install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

"${CARGO:-cargo}" build --release --workspace

# Prints the address a child announced with `listening on http://ADDR`.
listening() {
  local file=$1 pid=$2
  for _ in $(seq 200); do
    local addr
    addr=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$file" | head -1)
    if [ -n "$addr" ]; then
      echo "$addr"
      return
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "fuzz-api: $file: no listening line" >&2
  cat "$file" >&2
  return 1
}

# The fake's demo world: token demo-bot-token, one guild, channel
# 200000000000000002 (the examples in the document point at these).
"$bin/fake-discord" --host 127.0.0.1 --port 0 >"$logs/fake.log" 2>&1 &
fake=$!
fake_addr=$(listening "$logs/fake.log" "$fake")

# shellcheck disable=SC2086 # FUZZ_SERVICE_ARGS is a list of flags
"$bin/discord-bot-backend" --host 127.0.0.1 --port 0 \
  --discord-api "http://$fake_addr/api/v10" ${FUZZ_SERVICE_ARGS:-} \
  >"$logs/service.log" 2>&1 &
svc=$!
base=http://$(listening "$logs/service.log" "$svc")

session() {
  "$python" - "$base" <<'PY'
import json, sys, urllib.request
request = urllib.request.Request(
    sys.argv[1] + "/api/auth/login",
    data=json.dumps({"token": "demo-bot-token"}).encode(),
    headers={"Content-Type": "application/json"},
)
print(json.load(urllib.request.urlopen(request, timeout=30))["sessionId"])
PY
}

checks=not_a_server_error,status_code_conformance,content_type_conformance
checks=$checks,response_schema_conformance,response_headers_conformance
checks=$checks,unsupported_method

# schemathesis keeps its example database and caches in ./.schemathesis:
# run it from a directory under target/, out of the source tree.
workdir=target/fuzz-api
mkdir -p "$workdir"
st() (
  cd "$workdir"
  "$python" -m schemathesis.cli run "$base/api/openapi.json" \
    --checks "$checks" \
    --max-examples "$max_examples" \
    --request-timeout 30 \
    --no-color \
    ${FUZZ_SEED:+--seed "$FUZZ_SEED"} \
    "$@"
)

# Logout would end the session every other operation runs with: it gets its
# own session and its own pass, last. Both sessions are made now, because
# fuzzing the login with bad tokens gets this address throttled.
main_session=$(session)
logout_session=$(session)
status=0
# /api/events is a stream that lasts as long as its session: with one, every
# example would wait out the request timeout. Its refusals are fuzzed in the
# pass without a session below; tests/events.rs covers the stream.
st -H "Authorization: $main_session" --exclude-path /api/auth/logout \
  --exclude-path /api/events || status=$?
st -H "Authorization: $logout_session" --include-path /api/auth/logout || status=$?
st --include-path /api/events || status=$?

# What the fuzzing reached: answers per route and status, from the
# service's request log (a run that only ever got 401s proves little).
echo "fuzz-api: the service's answers, by route and status:"
awk '$2 == "[INFO]" && ($3 == "GET" || $3 == "POST") && $5 ~ /^[0-9][0-9][0-9]$/ {
       split($4, target, "?"); route = target[1]
       if (route !~ /^\/(api\/|healthz|metrics)/) route = "(other paths)"
       n[$3 " " route " " $5]++
     }
     END { for (k in n) printf "  %6d  %s\n", n[k], k }' "$logs/service.log" | sort -k3,3 -k4,4n

if ! kill -0 "$svc" 2>/dev/null; then
  echo "fuzz-api: the service died; its log:" >&2
  cat "$logs/service.log" >&2
  status=1
fi
if [ "$status" != 0 ]; then
  echo "fuzz-api: failures above; the service's warnings and errors:" >&2
  grep -E '\[(WARN|ERROR)\]' "$logs/service.log" | tail -50 >&2 || true
fi
exit "$status"
