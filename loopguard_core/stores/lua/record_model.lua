-- record_model: what a model call really used. Releases the call's reservation (by call id, else the
-- oldest one) and adds the usage; an overspend is recorded and refuses the next call.
-- ARGV: 1 clock, 2 ttl, 3 call id, 4 tokens, 5 micro-USD.
local ttl = ARGV[2]
local has_id, id = call_id(ARGV[3])
local key = has_id and ('M:' .. id) or nil
local first = duplicate(key)
if first then return first end
local s = load()
local rid = nil
if has_id and redis.call('ZSCORE', RES, '=' .. id) then
  rid = '=' .. id
else
  rid = redis.call('ZRANGE', RES, 0, 0)[1]
end
if rid then release(s, rid) end
put(s, 'tokens', s.tokens + tonumber(ARGV[4]))
put(s, 'cost', s.cost + tonumber(ARGV[5]))
return finish(s, key, { 1, '', 0, s.turns, 0, '' }, {}, ttl)
