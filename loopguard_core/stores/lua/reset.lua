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
return finish(s, nil, { 1, '', 0, s.turns, 0, '' }, moves, ARGV[2])
