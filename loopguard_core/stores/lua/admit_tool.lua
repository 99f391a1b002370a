-- admit_tool: pre-flight check of one tool call; admits and counts it, or refuses (and trips).
-- ARGV: 1 clock, 2 'ttl,max_tool_calls,max calls of this tool,max_consecutive_failures,repeats allowed
--       ('' = loop detection off for this tool),signatures remembered,recovery window (us),max_seconds
--       (us)', 3 call id, 4 tool, 5 signature, 6 agent ('' or '=' .. agent).
local has_id, id = call_id()
local key = has_id and ('t:' .. id) or nil
local tool, sig = ARGV[4], ARGV[5]
local v = redis.call('HMGET', H, 'S', 'n:' .. tool, 'f:' .. tool, 's:' .. sig, key and ('i:' .. key) or 'S')
if key and v[5] then return { 2, v[5] } end
local max_calls, per_tool, max_fail = tonumber(CFG[2]), tonumber(CFG[3]), tonumber(CFG[4])
local allowed, memory = tonumber(CFG[5]), tonumber(CFG[6])
local recovery, max_seconds = tonumber(CFG[7]), tonumber(CFG[8])
local request = key and { tool, sig, ARGV[6] } or nil

local now, s, moves = clock(), state(v[1]), {}
start(s, now)
local refused = gate(s, now, recovery, moves)
if refused then return finish(s, now, key, refused, moves, request) end
local half = s.st == 'h'
if half and s.pk ~= '' and now < s.pu then
  return finish(s, now, key, { 0, 'probe_busy', 0, s.turns, 0, '', s.tr }, moves, request)
end

local elapsed = over_time(s, now, max_seconds)
if elapsed then
  return finish(s, now, key, trip(s, 'wall_clock', now, moves, tool, max_seconds, elapsed), moves, request)
end
if max_calls and s.tc + 1 > max_calls then
  return finish(s, now, key, trip(s, 'tool_ceiling', now, moves, tool, max_calls, s.tc + 1, 'all'), moves, request)
end
local used = tonumber(v[2]) or 0
if per_tool and used + 1 > per_tool then
  return finish(s, now, key, trip(s, 'tool_ceiling', now, moves, tool, per_tool, used + 1, 'tool'), moves, request)
end
-- A half-open probe may retry the failing tool: that is how recovery is tested.
local failed = tonumber(v[3]) or 0
if max_fail and not half and failed >= max_fail then
  return finish(s, now, key, trip(s, 'failures', now, moves, tool, max_fail, failed), moves, request)
end
local entry = v[4]
local streak, inflight, outcome = 0, 0, nil
if entry then
  streak, inflight, outcome = read_sig(entry)
  if allowed and streak >= allowed then
    return finish(s, now, key, trip(s, 'loop', now, moves, tool, allowed, '', streak), moves, request)
  end
end

-- Admit and count.
put(s, 'tc', s.tc + 1)
hset('n:' .. tool, int(used + 1))
if used == 0 then -- a tool seen for the first time joins the list that snapshot and reset read
  local names = redis.call('HGET', H, 'T')
  names = names and cmsgpack.unpack(names) or {}
  names[#names + 1] = tool
  hset('T', cmsgpack.pack(names))
end
put(s, 'seq', s.seq + 1)
redis.call('ZADD', LRU, int(s.seq), sig)
if not entry then
  if s.ln == 0 then created(LRU) end
  if s.ln + 1 > memory then -- forget the least recently used signature
    redis.call('HDEL', H, 's:' .. redis.call('ZPOPMIN', LRU)[1])
  else
    put(s, 'ln', s.ln + 1)
  end
end
-- Counted as a repeat until its outcome shows otherwise (pre-flight-only callers still catch loops).
write_sig(sig, streak + 1, inflight + 1, outcome)
local probe = 0
if half then
  put(s, 'pk', (has_id and id ~= '') and id or sig)
  put(s, 'pu', now + recovery)
  probe = 1
end
return finish(s, now, key, { 1, '', 0, s.turns, probe, '' }, moves, request)
