-- admit_tool: pre-flight check of one tool call; admits and counts it, or refuses (and trips).
-- ARGV: 1 clock, 2 ttl, 3 call id, 4 tool, 5 signature, 6 max_tool_calls, 7 max calls of this tool,
--       8 max_consecutive_failures, 9 repeats allowed ('' = loop detection off for this tool),
--       10 signatures remembered, 11 recovery window (us), 12 max_seconds (us), 13 agent ('' or
--       '=' .. agent). '' means no limit.
local now, ttl = clock(ARGV[1]), ARGV[2]
local has_id, id = call_id(ARGV[3])
local key = has_id and ('t:' .. id) or nil
local first = duplicate(key)
if first then return first end
local tool, sig = ARGV[4], ARGV[5]
local max_calls, per_tool, max_fail = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local allowed, memory = tonumber(ARGV[9]), tonumber(ARGV[10])
local recovery, max_seconds = tonumber(ARGV[11]), tonumber(ARGV[12])
local request = key and { tool, sig, ARGV[13] } or nil

local s, moves = load(), {}
start(s, now)
local refused = gate(s, now, recovery, moves)
if refused then return finish(s, key, refused, moves, ttl, request) end
local half = s.st == 'h'
if half and s.pk ~= '' and now < s.pu then
  return finish(s, key, { 0, 'probe_busy', 0, s.turns, 0, '', s.tr }, moves, ttl, request)
end

local elapsed = over_time(s, now, max_seconds)
if elapsed then
  return finish(s, key, trip(s, 'wall_clock', now, moves, tool, max_seconds, elapsed), moves, ttl, request)
end
if max_calls and s.tc + 1 > max_calls then
  return finish(s, key, trip(s, 'tool_ceiling', now, moves, tool, max_calls, s.tc + 1, 'all'), moves, ttl, request)
end
local used = tonumber(redis.call('HGET', TOOLS, tool)) or 0
if per_tool and used + 1 > per_tool then
  return finish(s, key, trip(s, 'tool_ceiling', now, moves, tool, per_tool, used + 1, 'tool'), moves, ttl, request)
end
-- A half-open probe may retry the failing tool: that is how recovery is tested.
local failed = tonumber(redis.call('HGET', FAILS, tool)) or 0
if max_fail and not half and failed >= max_fail then
  return finish(s, key, trip(s, 'failures', now, moves, tool, max_fail, failed), moves, ttl, request)
end
local entry = redis.call('HGET', SIGS, sig)
local streak, inflight, outcome = 0, 0, nil
if entry then
  streak, inflight, outcome = read_sig(entry)
  if allowed and streak >= allowed then
    return finish(s, key, trip(s, 'loop', now, moves, tool, allowed, '', streak), moves, ttl, request)
  end
end

-- Admit and count.
put(s, 'tc', s.tc + 1)
redis.call('HSET', TOOLS, tool, int(used + 1))
put(s, 'seq', s.seq + 1)
redis.call('ZADD', LRU, int(s.seq), sig)
if not entry and redis.call('ZCARD', LRU) > memory then
  local oldest = redis.call('ZPOPMIN', LRU)
  redis.call('HDEL', SIGS, oldest[1])
end
-- Counted as a repeat until its outcome shows otherwise (pre-flight-only callers still catch loops).
write_sig(sig, streak + 1, inflight + 1, outcome)
wrote(LRU)
local probe = 0
if half then
  put(s, 'pk', (has_id and id ~= '') and id or sig)
  put(s, 'pu', now + recovery)
  probe = 1
end
return finish(s, key, { 1, '', 0, s.turns, probe, '' }, moves, ttl, request)
