-- steer: the caller told the agent its call was refused (on_trip="steer") and lets the run go on. A health
-- trip closes without forgetting the window (the same call is refused again); past max_refusals the run is
-- stopped for good.
-- argv: 1 clock, 2 config (ttl, max_refusals (nil: no limit)).
settle(3) -- deferred tool outcomes of the run ride with this step (see _common.lua)
local v = redis.call('HMGET', H, 'S', 'rf')
local now, s, moves = clock(), state(v[1]), {}
local refusals = (tonumber(v[2]) or 0) + 1
hset('rf', int(refusals))
local cap = tonumber(CFG[2])
if cap and refusals > cap then
  if s.st ~= 'o' then move(s, 'o', 'refusals', moves) end
  s.term, s.tr, s.tk, s.tt, s.tl, s.to = true, 'refusals', 'refusals', '', cap, refusals
  s.oa, s.pk, s.trips = now, '', s.trips + 1
  return finish(s, now, nil, { 0, 'refusals', 1, s.turns, 0, '', cap, refusals }, moves, nil)
end
if s.st == 'o' and not s.term then
  move(s, 'c', 'steered', moves)
  s.tr, s.tk, s.tt, s.tl, s.to, s.oa, s.pk = '', '', '', '', '', false, ''
end
return finish(s, now, nil, { 1, '', 0, s.turns, 0, '' }, moves, nil)
