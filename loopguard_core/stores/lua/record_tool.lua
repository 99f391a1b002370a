-- record_tool: what a tool call returned; updates loop, stall and failure streaks and settles a probe.
-- ARGV: 1 clock, 2 config (ttl), 3 call id, 4 tool, 5 signature, 6 outcome digest, 7 failed (0/1),
--       8 empty answer (0/1), 9 says still running (0/1), 10 question words, 11 request shape.
local RECENT = 8 -- free-text questions remembered per tool
local has_id, id = call_id()
local key = has_id and ('T:' .. id) or nil
local tool, sig, outcome, failed = ARGV[4], ARGV[5], ARGV[6], ARGV[7] == '1'
local empty, waiting, words, shape = ARGV[8] == '1', ARGV[9] == '1', ARGV[10], ARGV[11]
local v = redis.call('HMGET', H, 'S', 's:' .. sig, 'f:' .. tool, key and ('i:' .. key) or 'S', 'e:' .. tool,
  words ~= '' and ('q:' .. tool) or 'S')
if key and v[4] then return { 2, v[4] } end

if v[2] then
  local streak, inflight, _, last = read_sig(v[2])
  inflight = math.max(0, inflight - 1)
  if last ~= outcome then
    -- A new answer restarts the streak; identical calls still in flight (parallel tool calls) keep
    -- counting, so a burst of copies cannot slip past the limit together.
    streak, last = 1 + inflight, outcome
  end
  write_sig(sig, streak, inflight, waiting, last)
end
if failed then
  hset('f:' .. tool, int((tonumber(v[3]) or 0) + 1))
elseif v[3] then
  redis.call('HDEL', H, 'f:' .. tool)
end
if empty and not failed and shape ~= '' then  -- only a paging request can stall
  -- Only the same request with another page/offset keeps the streak: paging into nothing.
  local count, before = 0, ''
  if v[5] then count, before = string.match(v[5], '^(%d+)|(.*)$') end
  hset('e:' .. tool, int(before == shape and tonumber(count) + 1 or 1) .. '|' .. shape)
elseif v[5] then
  redis.call('HDEL', H, 'e:' .. tool)
end
if words ~= '' then
  local ring = v[6] and cmsgpack.unpack(v[6]) or {}
  ring[#ring + 1] = { words, outcome }
  if #ring > RECENT then table.remove(ring, 1) end
  hset('q:' .. tool, cmsgpack.pack(ring))
end
local now, s, moves = clock(), state(v[1]), {}
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
