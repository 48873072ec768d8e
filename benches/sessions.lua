-- wrk script: every request carries the next session ID from the file named
-- by SESSIONS (one per line), so load spreads over all logged-in bots.
local sessions = {}
local next_index = 1

function init(args)
  local path = os.getenv("SESSIONS")
  for line in io.lines(path) do
    sessions[#sessions + 1] = line
  end
  -- Each wrk thread starts at a different place in the list.
  next_index = math.random(#sessions)
end

function request()
  local session = sessions[next_index]
  next_index = next_index % #sessions + 1
  return wrk.format("GET", nil, { ["Authorization"] = session })
end
