-- refuse_tool: the loop detectors (run by the client over the window admit_tool handed back) refused
-- a call that admit_tool had just admitted: take the admission back and trip.
-- argv: 1 clock, 2 config (ttl), 3 call id, 4 tool, 5 signature, 6 agent, 7 reason, 8 limit,
--       9 the observed count the trip's facts name ('' if none), 10 the finding's facts (JSON).
local has_id, id = call_id()
local key = has_id and ('t:' .. id) or nil
local tool, sig, reason = argv[4], argv[5], argv[7]
local limit, observed = tonumber(argv[8]), argv[9] ~= '' and tonumber(argv[9]) or ''
local v = redis.call('HMGET', H, 'S', 'n:' .. tool)
local now, s, moves = clock(), state(v[1]), {}
-- Not counted after all: the call never runs.
put(s, 'tc', math.max(0, s.tc - 1))
local used = tonumber(v[2]) or 0
if used > 0 then hset('n:' .. tool, int(used - 1)) end
local queued = redis.call('HGET', FLIGHT, sig)
if queued then
  keep_flying(s, sig, string.match(queued, '^(.*) %d+$'))
end
if s.st == 'h' then put(s, 'pk', '') end -- a refused probe gives the probe up
local r
if s.st == 'o' then -- another caller tripped meanwhile: this call is refused all the same
  r = { 0, reason, 0, s.turns, 0, '', limit, observed, 'json', argv[10] }
else
  r = trip(s, reason, now, moves, tool, limit, observed, 'json', argv[10])
end
-- A retried request must get this refusal, not the admission remembered a moment ago.
if key then
  hset('i:' .. key, cjson.encode({ r, { tool, sig, argv[6] } }))
end
return finish(s, now, nil, r, moves, nil)
