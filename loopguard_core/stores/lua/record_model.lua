-- record_model: what a model call really used. Releases the call's reservation and adds the usage; an
-- overspend is recorded and refuses the next call. Without a call id the report cannot be matched to
-- its admission, so the smallest reservation is released: what stays reserved then never falls below
-- what the calls still in flight really reserved, so concurrent workers still cannot overshoot.
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
  rid = redis.call('ZRANGE', RESMIN, 0, 0)[1]
end
if rid then release(s, rid) end
put(s, 'tokens', s.tokens + tonumber(ARGV[4]))
put(s, 'cost', s.cost + tonumber(ARGV[5]))
return finish(s, key, { 1, '', 0, s.turns, 0, '' }, {}, ttl)
