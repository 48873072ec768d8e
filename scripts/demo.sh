#!/usr/bin/env bash
# `make demo`: the service in front of the bundled fake Discord, offline.
# Prints curl commands that work against it; Ctrl-C stops both.
set -euo pipefail
bin=${1:-target/release}
port=${PORT:-3000}

"$bin/fake-discord" --port 0 > /tmp/fake-discord-demo.out &
fake=$!
trap 'kill $fake $svc 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
for _ in $(seq 50); do
  grep -q "listening on" /tmp/fake-discord-demo.out 2>/dev/null && break
  sleep 0.1
done
fake_url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' /tmp/fake-discord-demo.out | head -1)

"$bin/discord-bot-backend" --port "$port" --discord-api "$fake_url/api/v10" &
svc=$!
sleep 0.5
base="http://127.0.0.1:$port"

# A send, done here so the demo shows one: log in, post a message, print
# the answer (201, Discord's message, and the Idempotency-Key to retry with).
session=$(curl -s -X POST "$base/api/auth/login" -H 'Content-Type: application/json' \
  -d '{"token": "demo-bot-token"}' | sed 's/.*"sessionId":"\([^"]*\)".*/\1/')
echo
echo "  A message sent through the service (POST /api/messages):"
curl -s -i -X POST "$base/api/messages?channelId=200000000000000002" \
  -H "Authorization: $session" -H 'Content-Type: application/json' \
  -d '{"content": "Hello from make demo"}' | grep -iE '^(HTTP/|idempotency-key:)|^\{' | sed 's/^/    /'
curl -s -X POST "$base/api/auth/logout" -H "Authorization: $session" > /dev/null

cat <<TXT

  Fake Discord: $fake_url    Service: $base
  Demo bot token: demo-bot-token

  # log in; copy sessionId from the answer
  curl -s -X POST $base/api/auth/login -H 'Content-Type: application/json' -d '{"token": "demo-bot-token"}'
  S=\$(curl -s -X POST $base/api/auth/login -d '{"token": "Bot demo-bot-token"}' | sed 's/.*"sessionId":"\([^"]*\)".*/\1/')

  curl -s $base/api/guilds -H "Authorization: \$S"
  curl -s "$base/api/members?limit=5" -H "Authorization: \$S"
  curl -s $base/api/channels -H "Authorization: Bearer \$S"
  curl -s "$base/api/messages?channelId=200000000000000002&limit=3" -H "Authorization: \$S"

  # write: send (retry safely with the Idempotency-Key it returns), react, DM
  curl -si -X POST "$base/api/messages?channelId=200000000000000002" -H "Authorization: \$S" \\
       -H 'Content-Type: application/json' -H 'Idempotency-Key: demo-1' -d '{"content": "hi"}'
  curl -s -X PUT "$base/api/reactions?channelId=200000000000000002&messageId=MESSAGE_ID&emoji=%F0%9F%91%8D" -H "Authorization: \$S"
  curl -s -X POST "$base/api/dm?userId=USER_ID" -H "Authorization: \$S" -H 'Content-Type: application/json' -d '{"content": "psst"}'
  # any allowed Discord route, the session as the bot token
  curl -s "$base/api/discord/v10/channels/200000000000000002/messages?limit=2" -H "Authorization: Bot \$S"

  curl -s -X POST $base/api/auth/logout -H "Authorization: \$S"
  curl -s $base/healthz

  Ctrl-C stops both.
TXT
wait $svc
