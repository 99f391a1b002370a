-- record_model: what a model call really used. Releases the call's reservation and adds the usage; an
-- overspend is recorded and refuses the next call. Without a matching call id the report cannot be
-- matched to its admission, so the smallest reservation (tokens, then micro-USD) is released: what stays
-- reserved then never falls below what the calls still in flight really reserved.
-- argv: 1 clock, 2 config (ttl), 3 call id, 4 tokens, 5 micro-USD, 6 failed (0/1): a call that raised
-- releases its reservation without being remembered, so a retry under the same id still counts.
settle(7) -- deferred tool outcomes of the run ride with this step (see _common.lua)
local has_id, id = call_id()
local key = (has_id and argv[6] ~= '1') and ('M:' .. id) or nil
local v = redis.call('HMGET', H, 'S', key and ('i:' .. key) or 'S', has_id and ('r:=' .. id) or 'S')
if key and v[2] then flush_settled() return { 2, v[2] } end
local now, s = clock(), state(v[1])
if s.rn > 0 then
  if has_id and v[3] then
    release(s, '=' .. id, v[3])
  elseif has_id and argv[6] == '1' then
    -- a failure names its call: nothing held under that id, so no other call's reservation is released
  else
    release(s, rid_of(redis.call('ZRANGE', RESMIN, 0, 0)[1]))
  end
end
put(s, 'tokens', s.tokens + tonumber(argv[4]))
put(s, 'cost', s.cost + tonumber(argv[5]))
return finish(s, now, key, { 1, '', 0, s.turns, 0, '' }, {}, nil)
