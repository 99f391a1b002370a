-- reset: close the breaker by hand (OPEN/HALF_OPEN -> CLOSED); counters stay, loop memory is cleared.
-- ARGV: 1 clock (unused), 2 ttl.
local s, moves = load(), {}
if s.st == 'h' or s.st == 'o' then move(s, 'c', 'reset', moves) end
put(s, 'term', false)
put(s, 'tr', '')
put(s, 'tk', '')
put(s, 'tt', '')
put(s, 'tl', '')
put(s, 'to', '')
put(s, 'oa', nil)
put(s, 'pk', '')
redis.call('DEL', FAILS, SIGS, LRU)
-- A call refused before the reset may be retried with the same id after it (e.g. a human approved it).
local seen = redis.call('HGETALL', SEEN)
local forgot = {}
for i = 1, #seen, 2 do
  if string.sub(seen[i + 1], 1, 4) == '[[0,' then forgot[seen[i]] = true end
end
if next(forgot) then
  local order, kept = redis.call('LRANGE', SEENQ, 0, -1), {}
  for i = 1, #order do
    if forgot[order[i]] then redis.call('HDEL', SEEN, order[i]) else kept[#kept + 1] = order[i] end
  end
  redis.call('DEL', SEENQ)
  for i = 1, #kept, 1000 do
    redis.call('RPUSH', SEENQ, unpack(kept, i, math.min(i + 999, #kept)))
  end
  wrote(SEENQ)
end
return finish(s, nil, { 1, '', 0, s.turns, 0, '' }, moves, ARGV[2])
