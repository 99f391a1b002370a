-- snapshot: a read-only view of one run (no clock, no writes, no TTL refresh).
local v = redis.call('HMGET', H, 'st', 'term', 'tr', 'turns', 'tokens', 'cost', 'tc', 'trips', 'sa', 'oa')
v[11] = redis.call('HGETALL', TOOLS)
return v
