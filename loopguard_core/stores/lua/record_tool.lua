-- record_tool: what a tool call returned; appends it to the run's window, updates the failure streak
-- and settles a half-open probe.
-- ARGV: 1 clock, 2 config (ttl, window size), 3 call id, 4 tool, 5 signature, 6 failed (0/1), 7 the
--       step without its call number (packed by the client; digests and flags only), 8 the outcome's
--       digest (a failure streak counts the same error again and again; another error starts over).
local has_id, id = call_id()
local key = has_id and ('T:' .. id) or nil
local tool, sig, failed = ARGV[4], ARGV[5], ARGV[6] == '1'
local window = tonumber(CFG[2])
local v = redis.call('HMGET', H, 'S', 'f:' .. tool, key and ('i:' .. key) or 'S')
if key and v[3] then return { 2, v[3] } end
local now, s, moves = clock(), state(v[1]), {}

-- The call's number: the oldest admitted call with this signature still in flight.
local number = s.tc
local queued = redis.call('HGET', FLIGHT, sig)
if queued then
  local first, rest = string.match(queued, '^(%d+) ?(.*)$')
  number = tonumber(first)
  if rest ~= '' then redis.call('HSET', FLIGHT, sig, rest) else redis.call('HDEL', FLIGHT, sig) end
end
if window then
  if redis.call('RPUSH', WIN, struct.pack('>I4', number % 4294967296) .. ARGV[7]) == 1 then created(WIN) end
  redis.call('LTRIM', WIN, -window, -1)
end
if failed then
  local count, error = 0, ''
  if v[2] then count, error = string.match(v[2], '^(%d+) ?(.*)$') end
  hset('f:' .. tool, int(error == ARGV[8] and tonumber(count) + 1 or 1) .. ' ' .. ARGV[8])
elseif v[2] then
  redis.call('HDEL', H, 'f:' .. tool)
end
local probe = 0
if s.st == 'h' then
  -- The probe is the call holding the reservation (matched by call id or signature).
  local mine
  if s.pk == '' then mine = not has_id else mine = (has_id and s.pk == id) or s.pk == sig end
  if mine then
    probe = 1
    put(s, 'pk', '')
    if failed then
      move(s, 'o', 'probe failed', moves)
      s.oa, s.tr, s.trips = now, 'failures', s.trips + 1
    else
      move(s, 'c', 'probe succeeded', moves)
      s.tr, s.tk, s.tt, s.tl, s.to, s.oa = '', '', '', '', '', false
    end
  end
end
return finish(s, now, key, { 1, '', 0, s.turns, probe, '' }, moves, nil)
