-- reset: close the breaker by hand (OPEN/HALF_OPEN -> CLOSED); counters stay; the window, the calls in
-- flight and the failure streaks are cleared, and remembered refusals are forgotten.
-- argv: 1 clock, 2 config (ttl).
settle(3) -- deferred tool outcomes of the run ride with this step (see _common.lua)
local v = redis.call('HMGET', H, 'S')
local now, s, moves = clock(), state(v[1]), {}
if s.st == 'h' or s.st == 'o' then move(s, 'c', 'reset', moves) end
put(s, 'term', false)
s.tr, s.tk, s.tt, s.tl, s.to, s.oa, s.pk = '', '', '', '', '', false, ''

local function hdel_all(fields)
  for i = 1, #fields, 1000 do redis.call('HDEL', H, unpack(fields, i, math.min(i + 999, #fields))) end
end
-- Failure streaks: every field with this prefix; and the count of steered refusals.
local DOOMED = { ['f:'] = true, ['rf'] = true }
local doomed = {}
for _, field in ipairs(redis.call('HKEYS', H)) do
  if DOOMED[string.sub(field, 1, 2)] then doomed[#doomed + 1] = field end
end
redis.call('DEL', WIN, FLIGHT)
put(s, 'wn', 0)
put(s, 'fn', 0)
-- A call refused before the reset may be retried with the same id after it (e.g. a human approved it).
local order, kept, forgot = redis.call('LRANGE', SEENQ, 0, -1), {}, false
for i = 1, #order, 1000 do
  local last = math.min(i + 999, #order)
  local fields = {}
  for j = i, last do fields[#fields + 1] = 'i:' .. order[j] end
  local verdicts = redis.call('HMGET', H, unpack(fields))
  for j = i, last do
    local first = verdicts[j - i + 1]
    if first and string.sub(first, 1, 4) == '[[0,' then
      doomed[#doomed + 1] = fields[j - i + 1]
      forgot = true
    else
      kept[#kept + 1] = order[j]
    end
  end
end
if forgot then
  redis.call('DEL', SEENQ)
  for i = 1, #kept, 1000 do redis.call('RPUSH', SEENQ, unpack(kept, i, math.min(i + 999, #kept))) end
  if #kept > 0 then created(SEENQ) end
end
if #doomed > 0 then hdel_all(doomed) end
return finish(s, now, nil, { 1, '', 0, s.turns, 0, '' }, moves, nil)
