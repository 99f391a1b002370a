-- record_tool: what a tool call returned; updates loop and failure streaks and settles a probe.
-- ARGV: 1 clock, 2 ttl, 3 call id, 4 tool, 5 signature, 6 outcome digest, 7 failed (0/1).
local ttl = ARGV[2]
local has_id, id = call_id(ARGV[3])
local key = has_id and ('T:' .. id) or nil
local first = duplicate(key)
if first then return first end
local tool, sig, outcome, failed = ARGV[4], ARGV[5], ARGV[6], ARGV[7] == '1'

local entry = redis.call('HGET', SIGS, sig)
if entry then
  local streak, inflight, last = read_sig(entry)
  inflight = math.max(0, inflight - 1)
  if last ~= outcome then
    -- A new answer restarts the streak; identical calls still in flight (parallel tool calls) keep
    -- counting, so a burst of copies cannot slip past the limit together.
    streak, last = 1 + inflight, outcome
  end
  write_sig(sig, streak, inflight, last)
end
if failed then
  redis.call('HINCRBY', FAILS, tool, 1)
  wrote(FAILS)
else
  redis.call('HDEL', FAILS, tool)
end
local s, moves = load(), {}
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
      put(s, 'oa', clock(ARGV[1]))
      put(s, 'tr', 'failures')
      put(s, 'trips', s.trips + 1)
    else
      move(s, 'c', 'probe succeeded', moves)
      put(s, 'tr', '')
      put(s, 'tk', '')
      put(s, 'tt', '')
      put(s, 'tl', '')
      put(s, 'to', '')
      put(s, 'oa', nil)
    end
  end
end
return finish(s, key, { 1, '', 0, s.turns, probe, '' }, moves, ttl)
