-- admit_tool: pre-flight check of one tool call against the ceilings; admits and counts it, or refuses
-- (and trips). When loop detection covers the tool, an admission also hands back what the detectors
-- need: the call's number, how many identical calls are in flight, and the run's window. Whether any
-- detector can fire is decided by the client (LoopDetection.may_fire), never here: the loop rules are
-- written once, in Python.
-- argv: 1 clock, 2 config (ttl, max_tool_calls, max calls of this tool, max_consecutive_failures,
--       loop-checked (1/0), recovery window (us), max_seconds (us), observe (1/0), window size,
--       calls remembered in flight), 3 call id, 4 tool, 5 signature, 6 agent ('' or '=' .. agent),
--       7 the window's version the client holds ('' for none), 8 the newest step it holds ('' for none),
--       9... deferred outcomes (settle).
-- Reply when the tool is loop-checked and the call admitted: {3, '', 0, turn, probe, transitions,
-- observed, call number, identical calls in flight, fresh, steps, window, version, delta}, or without
-- transitions and observed ceilings one bulk string (one reply for the client to parse, not eight): the
-- decimal numbers 'turn * 2 + probe, call number, identical calls in flight * 2 + fresh, steps, version, delta',
-- each followed by a space but the last, which ':' follows, then the window. fresh is 1 when Redis holds no
-- outcome for the call's id (see LONG_REPLY); steps is the window's length; window is the run's steps packed end
-- to end, newest first (each step says its own length): all of them, or with delta 1 only those pushed since the
-- client's version (the client holds the rest); version is the window's version now.
local has_id, id = call_id()
local key = has_id and ('t:' .. id) or nil
local tool, sig = argv[4], argv[5]
local v
if #argv == 16 and not has_id and argv[11] == '' then
  -- The usual deferred turn: one outcome rides along, and neither call has an id. One HMGET reads what both need
  -- (the outcome reads the state from it, this step then from SETTLED_STATE); this call's failure streak is what
  -- the outcome left when it was of the same tool.
  local otool = argv[12]
  v = redis.call('HMGET', H, 'S', 'n:' .. tool, 'f:' .. tool, 'f:' .. otool)
  settle(9, { v[1], v[4] })
  if otool == tool then v[3] = STREAK_LEFT or nil end
  v[4] = nil
else
  settle(9)
  v = redis.call('HMGET', H, 'S', 'n:' .. tool, 'f:' .. tool, key and ('i:' .. key) or 'S',
    key and ('i:T:' .. id) or 'S')
end
local max_calls, per_tool, max_fail = tonumber(CFG[2]), tonumber(CFG[3]), tonumber(CFG[4])
local checked, recovery, max_seconds = CFG[5] == 1, tonumber(CFG[6]), tonumber(CFG[7])
local observe, window, memory = CFG[8] == 1, tonumber(CFG[9]), tonumber(CFG[10])
if key and v[4] then
  -- A retry comes within the model turn its call came in, or before the call's outcome. The id again in a later
  -- turn, once its call was refused or reported, is a new call (servers that number calls per answer, or send one
  -- id for all): its outcome is forgotten, and it is judged as any other. The rule is RunState.admit_tool's
  -- (stores/_run_state.py).
  -- (the usual retry, admitted and not reported yet, is told from the record's prefix: nothing decoded)
  if (not v[5] and string.sub(v[4], 1, 4) == '[[1,') or cjson.decode(v[4])[1][4] == state(v[1]).turns then
    flush_settled()
    return { 2, v[4] }
  end
  KEPT = key
  if v[5] then
    redis.call('HDEL', H, 'i:T:' .. id)
    redis.call('LREM', SEENQ, 1, 'T:' .. id) -- as the memory store pops it: no stale entry left behind
    v[5] = nil
  end
end
-- This call id's outcome is already recorded: the reply is never the plain integer, nor "fresh" when it
-- carries the window; either tells the client that the outcome of the call may wait (RedisStore
-- defer_seconds), which it may only when Redis holds none for its id.
if key and v[5] then LONG_REPLY = true end
local request = key and { tool, sig, argv[6] } or nil

local now, s, moves = clock(), state(v[1]), {}
start(s, now)
local refused = gate(s, now, recovery, moves)
if refused then return finish(s, now, key, refused, moves, request) end
local half = s.st == 'h'
if half and s.pk ~= '' and now < s.pu then
  return finish(s, now, key, { 0, 'probe_busy', 0, s.turns, 0, '', s.tr }, moves, request)
end

local function over(reason, limit, observed, ...)
  local r = breach(observe, s, reason, now, moves, tool, limit, observed, ...)
  if r then return finish(s, now, key, r, moves, request) end
  return nil
end
local r
local elapsed = over_time(s, now, max_seconds)
if elapsed then r = over('wall_clock', max_seconds, elapsed) if r then return r end end
if max_calls and s.tc + 1 > max_calls then
  r = over('tool_ceiling', max_calls, s.tc + 1, 'all') if r then return r end
end
local used = tonumber(v[2]) or 0
if per_tool and used + 1 > per_tool then
  r = over('tool_ceiling', per_tool, used + 1, 'tool') if r then return r end
end
-- A half-open probe may retry the failing tool: that is how recovery is tested.
local failed = tonumber(v[3] and string.match(v[3], '^(%d+)') or 0)
if max_fail and not half and failed >= max_fail then
  r = over('failures', max_fail, failed) if r then return r end
end

-- Admit and count.
put(s, 'tc', s.tc + 1)
hset('n:' .. tool, int(used + 1))
if used == 0 then -- a tool seen for the first time joins the list that snapshot reads
  local names = redis.call('HGET', H, 'T')
  names = names and cmsgpack.unpack(names) or {}
  names[#names + 1] = tool
  hset('T', cmsgpack.pack(names))
end
-- In flight until reported: the numbers of the admitted calls with this signature, oldest first.
local queued = s.fn ~= 0 and redis.call('HGET', FLIGHT, sig) or nil
local inflight = 0
if queued then
  for _ in string.gmatch(queued, '%d+') do inflight = inflight + 1 end
  redis.call('HSET', FLIGHT, sig, queued .. ' ' .. int(s.tc))
else
  local held = s.fn or redis.call('HLEN', FLIGHT)
  if held >= memory then -- calls that never report
    redis.call('DEL', FLIGHT)
    held = 0
  end
  -- Two fields added: the hash was not there (its '' field never goes, see _common.lua), it needs its TTL.
  if redis.call('HSET', FLIGHT, sig, int(s.tc), '', '') == 2 then created(FLIGHT) end
  put(s, 'fn', held + 1)
end
local probe = 0
if half then
  put(s, 'pk', (has_id and id ~= '') and id or sig)
  put(s, 'pu', now + recovery)
  probe = 1
end
local admitted = { 1, '', 0, s.turns, probe, '' }
if not checked then return finish(s, now, key, admitted, moves, request) end
remember(key, admitted, request) -- a retried request is admitted again without a second judgement
local due = ttl_due(s, now)
flush(s)
if due then
  for i = 1, #keys do redis.call('PEXPIRE', keys[i], TTL) end
end
local fresh = LONG_REPLY and 0 or 1
-- Newest first: the client reads the window from its end (most calls need only the last few steps). A client
-- that holds the window as of its version gets only the steps pushed since: most calls, none at all.
local n = math.min(s.wn or redis.call('LLEN', WIN), window)
local version, known = s.ln or 0, tonumber(argv[7])
local behind = known and version - known
local delta = (behind and behind >= 0 and behind <= n) and 1 or 0
local steps
if delta == 1 and behind < n then
  -- The step the client holds as its newest, then those pushed since. Another step there: one was pushed that
  -- the version does not count (an older release did), and the client gets the whole window. When the steps
  -- pushed since are those this step's own outcomes pushed (a client's deferred outcomes ride with its next
  -- admission), this step has them already: only the step before them is read.
  if behind > 0 and behind == #PUSHED then
    if redis.call('LINDEX', WIN, -(behind + 1)) == argv[8] then steps = PUSHED else delta = 0 end
  else
    steps = redis.call('LRANGE', WIN, -(behind + 1), -1)
    if steps[1] == argv[8] then table.remove(steps, 1) else delta = 0 end
  end
end
if delta == 0 then
  steps = redis.call('LRANGE', WIN, -window, -1)
elseif not steps then
  steps = behind > 0 and redis.call('LRANGE', WIN, -behind, -1) or {}
end
local m = #steps
for i = 1, math.floor(m / 2) do steps[i], steps[m + 1 - i] = steps[m + 1 - i], steps[i] end
steps = table.concat(steps)
moves = all_moves(moves)
if #moves == 0 and #OBSERVED == 0 then -- the usual case, in one string
  return string.format('%d %d %d %d %d %d:', s.turns * 2 + probe, s.tc, inflight * 2 + fresh, n, version, delta)
    .. steps
end
return { 3, '', 0, s.turns, probe, table.concat(moves, '|'), #OBSERVED > 0 and cjson.encode(OBSERVED) or '', s.tc,
  inflight, fresh, n, steps, version, delta }
