-- snapshot: a read-only view of one run (no clock, no writes, no TTL refresh).
-- Returns {state, terminal, trip reason, turns, tokens, micro-USD, tool calls, trips, started, opened,
-- {tool, calls, ...}, refusals steered}.
local v = redis.call('HMGET', H, 'S', 'T', 'rf')
local s = state(v[1], true)
local per_tool = {}
if v[2] then
  local names, fields = cmsgpack.unpack(v[2]), {}
  for i = 1, #names do fields[i] = 'n:' .. names[i] end
  local counts = redis.call('HMGET', H, unpack(fields))
  for i = 1, #names do
    per_tool[#per_tool + 1] = names[i]
    per_tool[#per_tool + 1] = counts[i] or '0'
  end
end
return { s.st, s.term and '1' or '0', s.tr, s.turns, s.tokens, s.cost, s.tc, s.trips,
  s.sa and int(s.sa) or '', s.oa and int(s.oa) or '', per_tool, v[3] or '0' }
