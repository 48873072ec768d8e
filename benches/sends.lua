-- wrk script: like sessions.lua, but every request sends a message to the
-- session's bot's channel (POST /api/messages, no Idempotency-Key: the
-- service makes one up and keeps it, as it does for every send).
local sessions = {}
local channels = {}
local next_index = 1
local body = '{"content":"benchmark send: a short chat line"}'

function init(args)
  local path = os.getenv("SESSIONS")
  for line in io.lines(path) do
    local session, channel = line:match("^(%S+)%s+(%S+)$")
    sessions[#sessions + 1] = session
    channels[#channels + 1] = channel
  end
  next_index = math.random(#sessions)
end

function request()
  local index = next_index
  next_index = next_index % #sessions + 1
  return wrk.format("POST", "/api/messages?channelId=" .. channels[index],
                    { ["Authorization"] = sessions[index],
                      ["Content-Type"] = "application/json" }, body)
end
