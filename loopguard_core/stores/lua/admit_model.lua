-- admit_model: pre-flight check of one model call against turn, token and USD ceilings.
-- argv: 1 clock, 2 config (ttl, max_turns, max_tokens, max micro-USD, recovery window (us), max_seconds
--       (us), reservation lifetime (us; nil = do not reserve), observe (1/0)), 3 call id, 4 projected
--       tokens, 5 projected micro-USD.
-- Spent plus what admitted calls still in flight have reserved is compared with a ceiling, so
-- concurrent workers cannot each take the last unit; record_model releases the reservation.
settle(6) -- deferred tool outcomes of the run ride with this step (see _common.lua)
local has_id, id = call_id()
local key = has_id and ('m:' .. id) or nil
local rid = has_id and ('=' .. id) or nil
local v = redis.call('HMGET', H, 'S', key and ('i:' .. key) or 'S', rid and ('r:' .. rid) or 'S')
if key and v[2] then flush_settled() return { 2, v[2] } end
local want_tokens, want_micros = tonumber(argv[4]), tonumber(argv[5])
local max_turns, max_tokens, max_micros = tonumber(CFG[2]), tonumber(CFG[3]), tonumber(CFG[4])
local recovery, max_seconds, lifetime = tonumber(CFG[5]), tonumber(CFG[6]), tonumber(CFG[7])
local observe = CFG[8] == 1

local now, s, moves = clock(), state(v[1]), {}
start(s, now)
local refused = gate(s, now, recovery, moves)
if refused then return finish(s, now, key, refused, moves, nil) end
-- Reservations of calls that never reported back expire.
if s.rn > 0 then
  local expired = redis.call('ZRANGEBYSCORE', RES, '-inf', int(now))
  for i = 1, #expired do release(s, rid_of(expired[i])) end
end
local r
local elapsed = over_time(s, now, max_seconds)
if elapsed then
  r = breach(observe, s, 'wall_clock', now, moves, '', max_seconds, elapsed)
  if r then return finish(s, now, key, r, moves, nil) end
end
if max_turns and s.turns + 1 > max_turns then
  r = breach(observe, s, 'turn_ceiling', now, moves, '', max_turns, s.turns + 1)
  if r then return finish(s, now, key, r, moves, nil) end
end
-- Every call spends at least one token: at the ceiling exactly, the next call must be refused.
if max_tokens then
  local projected = s.tokens + s.rt + math.max(want_tokens, 1)
  if projected > max_tokens then
    r = breach(observe, s, 'token_ceiling', now, moves, '', max_tokens, projected, s.tokens, s.rt)
    if r then return finish(s, now, key, r, moves, nil) end
  end
end
if max_micros then
  local projected = s.cost + s.rc + math.max(want_micros, 1)
  if projected > max_micros then
    r = breach(observe, s, 'cost_ceiling', now, moves, '', max_micros, projected, s.cost, s.rc)
    if r then return finish(s, now, key, r, moves, nil) end
  end
end
put(s, 'turns', s.turns + 1)
if lifetime then
  put(s, 'seq', s.seq + 1)
  rid = rid or ('#' .. int(s.seq))
  if has_id and v[3] then release(s, rid, v[3]) end -- never two reservations under one id
  reserve(s, rid, now, lifetime, want_tokens, want_micros)
  if s.rn > RES_MAX then release(s, rid_of(redis.call('ZRANGE', RES, 0, 0)[1])) end
end
return finish(s, now, key, { 1, '', 0, s.turns, 0, '' }, moves, nil)
