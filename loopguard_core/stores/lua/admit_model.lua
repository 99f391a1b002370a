-- admit_model: pre-flight check of one model call against turn, token and USD ceilings.
-- ARGV: 1 clock, 2 ttl, 3 call id, 4 projected tokens, 5 projected micro-USD, 6 max_turns,
--       7 max_tokens, 8 max micro-USD, 9 recovery window (us), 10 max_seconds (us),
--       11 reservation lifetime (us; '' = do not reserve). '' means no limit.
-- Spent plus what admitted calls still in flight have reserved is compared with a ceiling, so
-- concurrent workers cannot each take the last unit; record_model releases the reservation.
local now, ttl = clock(ARGV[1]), ARGV[2]
local has_id, id = call_id(ARGV[3])
local key = has_id and ('m:' .. id) or nil
local first = duplicate(key)
if first then return first end
local want_tokens, want_micros = tonumber(ARGV[4]), tonumber(ARGV[5])
local max_turns, max_tokens, max_micros = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local recovery, max_seconds, lifetime = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])

local s, moves = load(), {}
start(s, now)
local refused = gate(s, now, recovery, moves)
if refused then return finish(s, key, refused, moves, ttl) end
local elapsed = over_time(s, now, max_seconds)
if elapsed then
  return finish(s, key, trip(s, 'wall_clock', now, moves, '', max_seconds, elapsed), moves, ttl)
end
if max_turns and s.turns + 1 > max_turns then
  return finish(s, key, trip(s, 'turn_ceiling', now, moves, '', max_turns, s.turns + 1), moves, ttl)
end
-- Reservations of calls that never reported back expire.
local expired = redis.call('ZRANGEBYSCORE', RES, '-inf', int(now))
for i = 1, #expired do release(s, expired[i]) end
-- Every call spends at least one token: at the ceiling exactly, the next call must be refused.
if max_tokens then
  local projected = s.tokens + s.rt + math.max(want_tokens, 1)
  if projected > max_tokens then
    return finish(s, key, trip(s, 'token_ceiling', now, moves, '', max_tokens, projected, s.tokens, s.rt),
      moves, ttl)
  end
end
if max_micros then
  local projected = s.cost + s.rc + math.max(want_micros, 1)
  if projected > max_micros then
    return finish(s, key, trip(s, 'cost_ceiling', now, moves, '', max_micros, projected, s.cost, s.rc),
      moves, ttl)
  end
end
put(s, 'turns', s.turns + 1)
if lifetime then
  put(s, 'seq', s.seq + 1)
  local rid = has_id and ('=' .. id) or ('#' .. int(s.seq))
  release(s, rid) -- never two reservations under one id
  redis.call('ZADD', RES, int(now + lifetime), rid)
  redis.call('HSET', RESV, rid, int(want_tokens) .. ' ' .. int(want_micros))
  -- Ordered by micro-USD, then tokens: see record_model for why the smallest goes first.
  redis.call('ZADD', RESMIN, want_micros + want_tokens / 1e9, rid)
  wrote(RES)
  wrote(RESV)
  wrote(RESMIN)
  put(s, 'rt', s.rt + want_tokens)
  put(s, 'rc', s.rc + want_micros)
  if redis.call('ZCARD', RES) > RES_MAX then release(s, redis.call('ZRANGE', RES, 0, 0)[1]) end
end
return finish(s, key, { 1, '', 0, s.turns, 0, '' }, moves, ttl)
