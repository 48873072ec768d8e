-- wrk script: every request carries the next session ID from the file named
-- by SESSIONS (a session and its bot's channel per line) and reads that
-- bot's channel, so load spreads over all logged-in bots and each bot keeps
-- its own rate-limit bucket, as real bots do. With SEND_BODY set, each
-- request sends that JSON as a message to the channel instead
-- (POST /api/messages, no Idempotency-Key: the service makes one up and
-- keeps it, as it does for every send).
local sessions = {}
local channels = {}
local next_index = 1
local send_body = os.getenv("SEND_BODY")

function init(args)
  local path = os.getenv("SESSIONS")
  for line in io.lines(path) do
    local session, channel = line:match("^(%S+)%s+(%S+)$")
    sessions[#sessions + 1] = session
    channels[#channels + 1] = channel
  end
  -- Each wrk thread starts at a different place in the list.
  next_index = math.random(#sessions)
end

function request()
  local index = next_index
  next_index = next_index % #sessions + 1
  if send_body then
    return wrk.format("POST", "/api/messages?channelId=" .. channels[index],
                      { ["Authorization"] = sessions[index],
                        ["Content-Type"] = "application/json" }, send_body)
  end
  return wrk.format("GET", "/api/messages?channelId=" .. channels[index] .. "&limit=50",
                    { ["Authorization"] = sessions[index] })
end
