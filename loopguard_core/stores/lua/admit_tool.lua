-- admit_tool: pre-flight check of one tool call against the ceilings; admits and counts it, or refuses
-- (and trips). When loop detection covers the tool, an admission also hands back what the detectors
-- need: the call's number, how many identical calls are in flight, and the run's window.
-- ARGV: 1 clock, 2 config (ttl, max_tool_calls, max calls of this tool, max_consecutive_failures,
--       loop-checked (1/0), recovery window (us), max_seconds (us), observe (1/0), window size,
--       calls remembered in flight, reach (see below; nil: always judge)), 3 call id, 4 tool, 5 signature,
--       6 agent ('' or '=' .. agent), 7 '1' when the detectors must see the window whatever it holds
--       (a paging request, calls of the same batch left out), else the signature's 16 bytes (the action
--       of a step), 8... deferred outcomes (settle).
-- Reply when the tool is loop-checked and the call admitted: {3, '', 0, turn, probe, transitions,
-- observed, call number, identical calls in flight, step, step, ...} (steps oldest first). When no
-- detector can fire (LoopDetection.may_fire, mirrored here: the built-in detectors all need this very call
-- among the last `reach` finished ones, a copy in flight, or a reworded question of the same tool right
-- before), the reply is the plain admission: the window is neither read in full nor sent.
settle(8)
local has_id, id = call_id()
local key = has_id and ('t:' .. id) or nil
local tool, sig = ARGV[4], ARGV[5]
local max_calls, per_tool, max_fail = tonumber(CFG[2]), tonumber(CFG[3]), tonumber(CFG[4])
local checked, recovery, max_seconds = CFG[5] == 1, tonumber(CFG[6]), tonumber(CFG[7])
local observe, window, memory = CFG[8] == 1, tonumber(CFG[9]), tonumber(CFG[10])
local v = redis.call('HMGET', H, 'S', 'n:' .. tool, 'f:' .. tool, key and ('i:' .. key) or 'S',
  key and ('i:T:' .. id) or 'S')
if key and v[4] then return { 2, v[4] } end
-- This call id's outcome is already recorded: the reply is never the plain integer, which tells the client
-- that the outcome of the call may wait (RedisStore defer_seconds) only when Redis holds none for its id.
if key and v[5] then LONG_REPLY = true end
local request = key and { tool, sig, ARGV[6] } or nil

local now, s, moves = clock(), state(v[1]), {}
start(s, now)
local refused = gate(s, now, recovery, moves)
if refused then return finish(s, now, key, refused, moves, request) end
local half = s.st == 'h'
if half and s.pk ~= '' and now < s.pu then
  return finish(s, now, key, { 0, 'probe_busy', 0, s.turns, 0, '', s.tr }, moves, request)
end

local function over(reason, limit, observed, ...)
  local r = breach(observe, s, reason, now, moves, tool, limit, observed, ...)
  if r then return finish(s, now, key, r, moves, request) end
  return nil
end
local r
local elapsed = over_time(s, now, max_seconds)
if elapsed then r = over('wall_clock', max_seconds, elapsed) if r then return r end end
if max_calls and s.tc + 1 > max_calls then
  r = over('tool_ceiling', max_calls, s.tc + 1, 'all') if r then return r end
end
local used = tonumber(v[2]) or 0
if per_tool and used + 1 > per_tool then
  r = over('tool_ceiling', per_tool, used + 1, 'tool') if r then return r end
end
-- A half-open probe may retry the failing tool: that is how recovery is tested.
local failed = tonumber(v[3] and string.match(v[3], '^(%d+)') or 0)
if max_fail and not half and failed >= max_fail then
  r = over('failures', max_fail, failed) if r then return r end
end

-- Admit and count.
put(s, 'tc', s.tc + 1)
hset('n:' .. tool, int(used + 1))
if used == 0 then -- a tool seen for the first time joins the list that snapshot reads
  local names = redis.call('HGET', H, 'T')
  names = names and cmsgpack.unpack(names) or {}
  names[#names + 1] = tool
  hset('T', cmsgpack.pack(names))
end
-- In flight until reported: the numbers of the admitted calls with this signature, oldest first.
local queued = redis.call('HGET', FLIGHT, sig)
local inflight = 0
if queued then
  for _ in string.gmatch(queued, '%d+') do inflight = inflight + 1 end
  redis.call('HSET', FLIGHT, sig, queued .. ' ' .. int(s.tc))
else
  local held = redis.call('HLEN', FLIGHT)
  if held >= memory then -- calls that never report
    redis.call('DEL', FLIGHT)
    held = 0
  end
  redis.call('HSET', FLIGHT, sig, int(s.tc))
  if held == 0 then created(FLIGHT) end
end
local probe = 0
if half then
  put(s, 'pk', (has_id and id ~= '') and id or sig)
  put(s, 'pu', now + recovery)
  probe = 1
end
local admitted = { 1, '', 0, s.turns, probe, '' }
if not checked then return finish(s, now, key, admitted, moves, request) end
local reach = tonumber(CFG[11])
if reach and inflight == 0 and ARGV[7] ~= '1' then
  local recent = redis.call('LRANGE', WIN, -reach, -1)
  local fire = false
  local last = recent[#recent]
  -- A step: number (4 bytes), flags (1), action (16), outcome (8), shape (16), tool length (2), words (2), tool.
  if last and bit.band(string.byte(last, 5), 64) ~= 0 then -- SIMILAR: a reworded question
    local n = string.byte(last, 46) * 256 + string.byte(last, 47)
    fire = string.sub(last, 50, 49 + n) == tool
  end
  if last and not fire then
    local action = ARGV[7]
    for i = 1, #recent do
      if string.sub(recent[i], 6, 21) == action then
        fire = true
        break
      end
    end
  end
  if not fire then return finish(s, now, key, admitted, moves, request) end
end
remember(key, admitted, request) -- a retried request is admitted again without a second judgement
local due = ttl_due(s, now)
flush(s)
if due then
  for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], TTL) end
end
local reply = { 3, '', 0, s.turns, probe, table.concat(all_moves(moves), '|'),
  #OBSERVED > 0 and cjson.encode(OBSERVED) or '', s.tc, inflight }
local steps = redis.call('LRANGE', WIN, -window, -1)
for i = 1, #steps do reply[#reply + 1] = steps[i] end
return reply
