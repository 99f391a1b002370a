-- Shared by every loopguard step (see below for how it is loaded).
-- Ceilings and the breaker's state machine mirror loopguard_core/stores/_run_state.py step for step;
-- tests/stores runs the same contract suite against both. Loop judgement is not here: the scripts keep
-- the run's window of finished calls (packed digests, built by the client) and hand it back with each
-- admission; the detectors (Python, loopguard_core.detection) judge it, and refuse_tool records their
-- refusal. Every check happens before the first write of a refusal path, because a Lua script is atomic
-- but not transactional.
--
-- KEYS share one hash tag {<ns>:<scope>:<run>}, so a Redis Cluster keeps a run in one slot:
--   1 the run's hash: 'S' the scalar state (msgpack), 'T' the tool names (msgpack), and one field per
--     'n:<tool>' call count, 'f:<tool>' failure streak, 'i:<call id>' first verdict (JSON),
--     'r:<reservation>' tokens and micro-USD reserved
--   2 call-id order (list)  3 reservation expiries (zset)  4 reservations by size (zset)
--   5 the window: the run's last finished tool calls, oldest first (list of packed steps)
--   6 calls in flight: signature -> call numbers admitted and not reported yet (hash)
-- One HMGET reads all a step needs and one HSET writes it back: a round trip stays one FCALL (or EVALSHA)
-- and the step itself stays a few Redis calls.
-- ARGV[1] is the clock in microseconds, or '' to read Redis TIME (the default: one clock for every
-- process and host). ARGV[2] is the step's configuration: msgpack values ttl, limit, limit, ... (nil for
-- no limit), precomputed once per Limits object. ARGV[3] is '' without a call id, '=' .. id with one.
-- The TTL is in milliseconds: every key gets it when created, and all of a run's keys get it again
-- once ttl/64 has passed since they last did, so a live run never expires and a finished one is gone
-- ttl after its last write (give or take ttl/64).
-- This file is loaded once as a Redis Function library where the server has them (Redis >= 7, Valkey), each
-- step a function that calls begin(); else each step runs as a script: _script.lua, this file,
-- begin(KEYS, ARGV), the step.

local SEEN_MAX, RES_MAX = 4096, 1024
-- The call's keys and arguments, and everything a step starts afresh: set by begin() (a library keeps these
-- between calls).
local keys, argv, H, SEENQ, RES, RESMIN, WIN, FLIGHT, CFG, TTL, REFRESH_US, SERVER_NOW
local W, OBSERVED, SETTLED, LONG_REPLY, SETTLED_STATE
-- STREAK_LEFT: the failure streak field ('f:<tool>') this step's last outcome left, false for none. PUSHED: the
-- steps this step's outcomes pushed to WIN, oldest first (admit_tool hands them back without reading them again).
local STREAK_LEFT, PUSHED
-- KEPT: a call id key this step found remembered from an earlier model turn (a reused id, see admit_tool): its new
-- verdict replaces the first where it stands in SEENQ, as the memory store replaces it in place.
local KEPT
-- The configuration last unpacked, and its packed text: a library keeps them between calls, and a client sends
-- the same few configurations again and again. CFG is only ever read.
local CFG_PACKED, CFG_UNPACKED = false, {}

local function begin(k, a)
  keys, argv = k, a
  H, SEENQ, RES, RESMIN, WIN, FLIGHT = k[1], k[2], k[3], k[4], k[5], k[6]
  if a[2] ~= CFG_PACKED then
    CFG_PACKED, CFG_UNPACKED = a[2], a[2] and { cmsgpack.unpack(a[2]) } or {} -- msgpack values, nil for "no limit"
  end
  CFG = CFG_UNPACKED
  TTL = CFG[1]
  REFRESH_US = (tonumber(TTL) or 0) * 1000 / 64
  SERVER_NOW = nil
  -- W: hash fields to write with the state. OBSERVED: ceilings broken in observe mode, noted, not enforced
  -- ({reason, limit, observed, extra...} each). SETTLED: transitions made by deferred outcomes applied first
  -- (settle), reported with the step that carried them. LONG_REPLY: set by a step whose admission must not be
  -- answered with the plain integer, nor called fresh when it carries the window (see admit_tool).
  -- SETTLED_STATE: the run's state as deferred outcomes left it, not written yet: the step reads it on and
  -- writes it once with its own (see settle).
  W, OBSERVED, SETTLED, LONG_REPLY, SETTLED_STATE, PUSHED, STREAK_LEFT, KEPT = {}, {}, {}, false, nil, {}, false, nil
end

-- Integers as exact decimal text: Lua's default number formatting keeps only 14 digits.
local function int(n) return string.format('%d', n) end

-- A clock argument ('' reads Redis TIME, once per script run) in microseconds.
local function time_of(c)
  if c ~= '' then return tonumber(c) end
  if not SERVER_NOW then
    local t = redis.call('TIME')
    SERVER_NOW = t[1] * 1000000 + t[2]
  end
  return SERVER_NOW
end

local function clock() return time_of(argv[1]) end

-- An empty call id is still an id.
local function call_id()
  if argv[3] == '' then return false, '' end
  return true, string.sub(argv[3], 2)
end

-- st c/o/h; term a budget trip; tr trip reason; tk/tt/tl/to kind, tool, limit, observed of the trip's
-- facts; oa/sa opened/started (us, false if unset); pk/pu probe reservation and its expiry; rt/rc
-- reserved in flight, rn reservations held; seq a counter for reservation names; ln the window's version
-- (see window_version); xp when the keys' TTL was last set (us); wn the steps WIN holds, fn the signatures FLIGHT
-- holds. wn and fn spare a step a Redis call each (LLEN, HLEN); nil when a release that does not keep them wrote
-- the state last (it packs fewer values): a step then asks Redis, and counts them from there on.
-- FLIGHT keeps a field '' that never goes: the hash stays when its last call reports, so the next admission
-- does not create it again (and set its TTL again).
-- The window's version counts the steps ever pushed to WIN; a client that holds the window as of version k is
-- sent only the steps pushed since (admit_tool). A new run starts it at Redis TIME in microseconds, so that a
-- client's version from an earlier run under the same keys (expired, dropped) is never taken for this run's:
-- it is either ahead of this run's version or further behind than WIN is long, and gets the whole window.
local function window_version()
  local t = redis.call('TIME')
  return t[1] * 1000000 + t[2]
end

local function state(packed, reading)
  if SETTLED_STATE and not reading then return SETTLED_STATE end
  if not packed then
    -- A new run (or one whose state expired): side keys left from an expired run must not leak in.
    if not reading then redis.call('DEL', SEENQ, RES, RESMIN, WIN, FLIGHT) end
    return { st = 'c', term = false, tr = '', tk = '', tt = '', tl = '', to = '', oa = false, sa = false,
      pk = '', pu = 0, turns = 0, tokens = 0, cost = 0, tc = 0, trips = 0, seq = 0, rt = 0, rc = 0, rn = 0,
      ln = reading and 0 or window_version(), xp = false, wn = 0, fn = 0, dirty = true }
  end
  local st, term, tr, tk, tt, tl, to, oa, sa, pk, pu, turns, tokens, cost, tc, trips, seq, rt, rc, rn, ln,
    xp, wn, fn = cmsgpack.unpack(packed)
  return { st = st, term = term, tr = tr, tk = tk, tt = tt, tl = tl, to = to, oa = oa, sa = sa, pk = pk,
    pu = pu, turns = turns, tokens = tokens, cost = cost, tc = tc, trips = trips, seq = seq, rt = rt,
    rc = rc, rn = rn, ln = ln, xp = xp, wn = wn, fn = fn }
end

local function hset(field, value)
  W[#W + 1] = field
  W[#W + 1] = value
end

local function put(s, field, value)
  s[field] = value
  s.dirty = true
end

-- Whether the TTL of all the run's keys is due for a refresh (see the top of this file).
local function ttl_due(s, now)
  if s.xp and now - s.xp < REFRESH_US and now >= s.xp then return false end
  put(s, 'xp', now)
  return true
end

-- A side key just created gets its TTL at once.
local function created(key) redis.call('PEXPIRE', key, TTL) end

-- Writes the hash fields set so far (one HSET) and starts a new list of them.
local function write_fields()
  if #W > 0 then redis.call('HSET', H, unpack(W)) end
  W = {}
end

local function flush(s)
  if s.dirty then
    hset('S', cmsgpack.pack(s.st, s.term, s.tr, s.tk, s.tt, s.tl, s.to, s.oa, s.sa, s.pk, s.pu, s.turns,
      s.tokens, s.cost, s.tc, s.trips, s.seq, s.rt, s.rc, s.rn, s.ln, s.xp, s.wn, s.fn))
  end
  write_fields()
end

-- What stays in flight under a signature once one of its calls is taken off: ``rest`` (its other call numbers),
-- or nothing ('' or nil), when the signature leaves FLIGHT and the state's count of them drops.
local function keep_flying(s, sig, rest)
  if rest and rest ~= '' then
    redis.call('HSET', FLIGHT, sig, rest)
  else
    redis.call('HDEL', FLIGHT, sig)
    if s.fn then put(s, 'fn', math.max(0, s.fn - 1)) end
  end
end

-- Stored as JSON [verdict, request]: a retry gets the first verdict and the facts of the first request.
local function remember(key, r, request)
  if key == nil then return end
  hset('i:' .. key, cjson.encode({ r, request or {} }))
  if key == KEPT then return end
  local held = redis.call('RPUSH', SEENQ, key)
  if held == 1 then created(SEENQ) end
  if held > SEEN_MAX then redis.call('HDEL', H, 'i:' .. redis.call('LPOP', SEENQ)) end
end

-- A verdict is {status, reason, terminal, turn, probe, transitions, facts...}; status 1 admitted,
-- 0 refused, 2 duplicate (then the second element is what remember stored). An admission carries what
-- observe mode noted as its 7th element (JSON, '' if nothing). The common case, admitted with no change
-- of state and nothing observed, is the integer turn * 2 + probe: cheapest to send and to parse.

local function all_moves(moves)
  if #SETTLED == 0 then return moves end
  local all = {}
  for i = 1, #SETTLED do all[#all + 1] = SETTLED[i] end
  for i = 1, #moves do all[#all + 1] = moves[i] end
  return all
end

local function finish(s, now, key, r, moves, request)
  moves = all_moves(moves)
  remember(key, r, request) -- stored with no transitions: a retried request reports none
  local due = ttl_due(s, now)
  flush(s)
  if due then
    for i = 1, #keys do redis.call('PEXPIRE', keys[i], TTL) end
  end
  if r[1] == 1 and #moves == 0 and #OBSERVED == 0 and not LONG_REPLY then return r[4] * 2 + r[5] end
  r[6] = table.concat(moves, '|')
  if r[1] == 1 then r[7] = #OBSERVED > 0 and cjson.encode(OBSERVED) or '' end
  return r
end

local function move(s, target, why, moves)
  moves[#moves + 1] = s.st .. '>' .. target .. '>' .. why
  put(s, 'st', target)
end

-- Budget ceilings end the run; health trips (loop, stall, failures) may recover.
local BUDGET = { turn_ceiling = true, token_ceiling = true, cost_ceiling = true, tool_ceiling = true,
  wall_clock = true }

-- Opens the breaker. Returns the refusal with facts {limit, observed, extra...}.
local function trip(s, reason, now, moves, tool, limit, observed, ...)
  local terminal = BUDGET[reason] == true
  move(s, 'o', reason, moves)
  if terminal then s.term = true end
  s.tr, s.tk, s.tt, s.tl, s.to = reason, reason, tool, limit, observed
  s.oa, s.pk, s.trips = now, '', s.trips + 1
  return { 0, reason, terminal and 1 or 0, s.turns, 0, '', limit, observed, ... }
end

-- A broken ceiling: trips, or in observe mode (observe true) is noted and the call goes on (nil).
local function breach(observe, s, reason, now, moves, tool, limit, observed, ...)
  if observe then
    OBSERVED[#OBSERVED + 1] = { reason, limit or false, observed or false, ... }
    return nil
  end
  return trip(s, reason, now, moves, tool, limit, observed, ...)
end

-- Refuses while OPEN; half-opens a health trip once its recovery window has passed.
local function gate(s, now, recovery, moves)
  if s.st ~= 'o' then return nil end
  local retry_at = (s.oa or now) + recovery
  if s.term or now < retry_at then
    local retry = ''
    if not s.term then retry = retry_at - now end
    return { 0, 'open', s.term and 1 or 0, s.turns, 0, '', s.tr, retry, s.tk, s.tt, s.tl, s.to }
  end
  move(s, 'h', 'recovery window elapsed', moves)
  return nil
end

local function start(s, now)
  if not s.sa then put(s, 'sa', now) end
end

local function over_time(s, now, max_us)
  if max_us == nil or not s.sa then return nil end
  local elapsed = now - s.sa
  if elapsed > max_us then return elapsed end
  return nil
end

-- Gives back what a reservation held ('<tokens> <micro-USD> <member>', or nil if already gone).
local function release(s, rid, amounts)
  if not rid then -- the counters say reserved but nothing is: heal rather than block the run
    put(s, 'rt', 0)
    put(s, 'rc', 0)
    put(s, 'rn', 0)
    return
  end
  amounts = amounts or redis.call('HGET', H, 'r:' .. rid)
  if not amounts then return end
  local tokens, micros, member = string.match(amounts, '^(%d+) (%d+) (.*)$')
  put(s, 'rt', s.rt - tonumber(tokens))
  put(s, 'rc', s.rc - tonumber(micros))
  put(s, 'rn', s.rn - 1)
  redis.call('HDEL', H, 'r:' .. rid)
  redis.call('ZREM', RES, member)
  redis.call('ZREM', RESMIN, member)
end

-- The reservation a zset member stands for (members are '<order>:<id>': ties go to the older one).
local function rid_of(member)
  if not member then return nil end
  return string.match(member, '^%d+:(.*)$')
end

-- Holds a reservation for an admitted model call until it reports back or expires.
local function reserve(s, rid, now, lifetime, tokens, micros)
  local member = string.format('%015d', s.seq) .. ':' .. rid
  redis.call('ZADD', RES, int(now + lifetime), member)
  -- Ordered by tokens, then micro-USD: see record_model for why the smallest goes first.
  redis.call('ZADD', RESMIN, tokens * 1e9 + micros, member)
  if s.rn == 0 then
    created(RES)
    created(RESMIN)
  end
  hset('r:' .. rid, int(tokens) .. ' ' .. int(micros) .. ' ' .. member)
  put(s, 'rt', s.rt + tokens)
  put(s, 'rc', s.rc + micros)
  put(s, 'rn', s.rn + 1)
end

-- One tool outcome, as record_tool applies it. c the clock ('' for Redis TIME), w the window size (nil for
-- no window), cid '' or '=' .. call id, failed '1'/'0', step the packed step without its call number, err
-- the outcome's digest. read: the fields 'S' and 'f:<tool>' as the step already read them (only for an outcome
-- without a call id), or nil to read them here. Returns nil and the first verdict for a duplicate; else state,
-- now, key, verdict.
local function outcome(c, w, cid, tool, sig, failed_arg, step, err, moves, read)
  local has_id, id = cid ~= '', string.sub(cid, 2)
  local key = has_id and ('T:' .. id) or nil
  local failed, window = failed_arg == '1', tonumber(w)
  local v = read or redis.call('HMGET', H, 'S', 'f:' .. tool, key and ('i:' .. key) or 'S')
  if key and v[3] then return nil, v[3] end
  local now, s = time_of(c), state(v[1])
  -- The call's number: the oldest admitted call with this signature still in flight.
  local number = s.tc
  local queued = redis.call('HGET', FLIGHT, sig)
  if queued then
    local first, rest = string.match(queued, '^(%d+) ?(.*)$')
    number = tonumber(first)
    keep_flying(s, sig, rest)
  end
  if window then
    local packed = struct.pack('>I4', number % 4294967296) .. step
    PUSHED[#PUSHED + 1] = packed
    local held = redis.call('RPUSH', WIN, packed)
    if held == 1 then created(WIN) end
    -- Trimmed at once: a client with a wider window must not see the steps a narrower one let go (the memory
    -- store's window), so the trim cannot wait (lazily, wn would count steps another client dropped).
    if held > window then redis.call('LTRIM', WIN, -window, -1) end
    put(s, 'wn', math.min(held, window))
    -- A run begun by a release before versions (0) gets its start now, as a new run would.
    put(s, 'ln', ((s.ln or 0) == 0 and window_version() or s.ln) + 1)
  end
  if failed then
    local count, error = 0, ''
    if v[2] then count, error = string.match(v[2], '^(%d+) ?(.*)$') end
    STREAK_LEFT = int(error == err and tonumber(count) + 1 or 1) .. ' ' .. err
    hset('f:' .. tool, STREAK_LEFT)
  else
    if v[2] then redis.call('HDEL', H, 'f:' .. tool) end
    STREAK_LEFT = false
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
  return s, now, key, { 1, '', 0, s.turns, probe, '' }
end

-- Outcomes the client deferred (RedisStore defer_outcomes): they ride with the run's next step, in argv from
-- index ``from`` on, 8 values each (clock, window, call id, tool, signature, failed, step, error digest),
-- oldest first. Each is applied before the step reads anything, exactly as record_tool would have applied
-- it; its transitions are reported with the step's own. The fields they set are written at once; the run's
-- state is kept as SETTLED_STATE, which state() hands the next outcome and the step, and is written once, by the
-- step's own flush (a step that answers without one calls flush_settled). read: what the first outcome would read
-- (see outcome), when the step read it with its own fields.
local function settle(from, read)
  for i = from, #argv, 8 do
    local s, now, key, r = outcome(argv[i], argv[i + 1], argv[i + 2], argv[i + 3], argv[i + 4], argv[i + 5],
      argv[i + 6], argv[i + 7], SETTLED, i == from and read or nil)
    if s then
      remember(key, r, nil)
      write_fields()
      SETTLED_STATE = s
    end
  end
end

-- Writes the state deferred outcomes left, for a step that answers without writing its own (a retry).
local function flush_settled()
  if SETTLED_STATE then flush(SETTLED_STATE) end
end
