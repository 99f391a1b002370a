-- Shared by every loopguard script: prepended to each step when the scripts are registered.
-- The steps mirror loopguard_core/stores/_run_state.py rule for rule; tests/stores runs the same
-- contract suite against both. Every check happens before the first write of a refusal path,
-- because a Lua script is atomic but not transactional.
--
-- KEYS (one hash tag {<ns>:<scope>:<run>}, so a Redis Cluster keeps a run in one slot):
--   1 state hash  2 calls per tool  3 failure streaks  4 signature streaks  5 signature LRU (zset)
--   6 seen call ids -> first verdict  7 seen order (list)  8 reservation expiries (zset)
--   9 reservation amounts  10 reservations by size (zset)
-- ARGV[1] is the clock in microseconds, or '' to read Redis TIME (the default: one clock for every
-- process and host). ARGV[2] is the key TTL in milliseconds, refreshed on every write.
if redis.replicate_commands then pcall(redis.replicate_commands) end -- Redis < 7: TIME before writes

local H, TOOLS, FAILS, SIGS, LRU = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local SEEN, SEENQ, RES, RESV, RESMIN = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local SEEN_MAX = 4096
local RES_MAX = 1024
local BUDGET = { turn_ceiling = true, token_ceiling = true, cost_ceiling = true, tool_ceiling = true,
  wall_clock = true }
-- st: c/o/h; term: budget trip; tr: trip reason; tk/tt/tl/to: kind, tool, limit, observed of the trip's
-- facts; oa/sa: opened/started (us); pk/pu: probe reservation and its expiry; rt/rc: reserved in flight
local FIELDS = { 'st', 'term', 'tr', 'tk', 'tt', 'tl', 'to', 'oa', 'sa', 'pk', 'pu', 'turns', 'tokens',
  'cost', 'tc', 'trips', 'seq', 'rt', 'rc' }

-- Integers as exact decimal text: Lua's default number formatting keeps only 14 digits.
local function int(n) return string.format('%d', n) end

local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- ARGV[3]: '' without a call id, '=' .. id with one (an empty id is still an id).
local function call_id(arg)
  if arg == '' then return false, '' end
  return true, string.sub(arg, 2)
end

local function load()
  local v = redis.call('HMGET', H, unpack(FIELDS))
  return {
    st = v[1] or 'c', term = v[2] == '1', tr = v[3] or '', tk = v[4] or '', tt = v[5] or '',
    tl = v[6] or '', to = v[7] or '', oa = tonumber(v[8]), sa = tonumber(v[9]), pk = v[10] or '',
    pu = tonumber(v[11]) or 0, turns = tonumber(v[12]) or 0, tokens = tonumber(v[13]) or 0,
    cost = tonumber(v[14]) or 0, tc = tonumber(v[15]) or 0, trips = tonumber(v[16]) or 0,
    seq = tonumber(v[17]) or 0, rt = tonumber(v[18]) or 0, rc = tonumber(v[19]) or 0, w = {},
  }
end

local function put(s, field, value)
  s[field] = value
  s.w[field] = true
end

local function flush(s)
  local args = {}
  for field in pairs(s.w) do
    local v = s[field]
    if v == nil then v = ''
    elseif v == true then v = '1'
    elseif v == false then v = '0'
    elseif type(v) == 'number' then v = int(v) end
    args[#args + 1] = field
    args[#args + 1] = v
  end
  if #args > 0 then redis.call('HSET', H, unpack(args)) end
end

-- Keys written by this step; finish() refreshes their TTL. The state hash and the per-tool counts are
-- refreshed on every write, so a live run never loses a budget counter. Loop memory, failure streaks
-- and call ids expire ttl after they were last written.
local WRITTEN = {}
local function wrote(key) WRITTEN[key] = true end

local function touch(s, ttl)
  redis.call('PEXPIRE', H, ttl)
  redis.call('PEXPIRE', TOOLS, ttl)
  if s.rt ~= 0 or s.rc ~= 0 then -- live reservations must outlive nothing they account for
    wrote(RES)
    wrote(RESV)
    wrote(RESMIN)
  end
  for key in pairs(WRITTEN) do redis.call('PEXPIRE', key, ttl) end
end

local function duplicate(key)
  if key == nil then return nil end
  local first = redis.call('HGET', SEEN, key)
  if first then return { 2, first } end
  return nil
end

-- Stored as JSON [verdict, request]: a retry gets the first verdict and the facts of the first request.
local function remember(key, r, request)
  if key == nil then return end
  redis.call('HSET', SEEN, key, cjson.encode({ r, request or {} }))
  wrote(SEEN)
  wrote(SEENQ)
  if redis.call('RPUSH', SEENQ, key) > SEEN_MAX then
    redis.call('HDEL', SEEN, redis.call('LPOP', SEENQ))
  end
end

-- A verdict is {status, reason, terminal, turn, probe, transitions, facts...}; status 1 admitted,
-- 0 refused, 2 duplicate (then the second element is what remember stored).
local function finish(s, key, r, moves, ttl, request)
  flush(s)
  remember(key, r, request) -- stored with no transitions: a retried request reports none
  touch(s, ttl)
  r[6] = table.concat(moves, '|')
  return r
end

local function move(s, target, why, moves)
  moves[#moves + 1] = s.st .. '>' .. target .. '>' .. why
  put(s, 'st', target)
end

-- Opens the breaker. Returns the refusal with facts {limit, observed, extra...}.
local function trip(s, reason, now, moves, tool, limit, observed, ...)
  local terminal = BUDGET[reason] == true
  move(s, 'o', reason, moves)
  if terminal then put(s, 'term', true) end
  put(s, 'tr', reason)
  put(s, 'tk', reason)
  put(s, 'tt', tool)
  put(s, 'tl', limit)
  put(s, 'to', observed)
  put(s, 'oa', now)
  put(s, 'pk', '')
  put(s, 'trips', s.trips + 1)
  return { 0, reason, terminal and 1 or 0, s.turns, 0, '', limit, observed, ... }
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
  if s.sa == nil then put(s, 'sa', now) end
end

local function over_time(s, now, max_us)
  if max_us == nil or s.sa == nil then return nil end
  local elapsed = now - s.sa
  if elapsed > max_us then return elapsed end
  return nil
end

-- A signature entry is '<streak> <in flight>', then '|<digest of its last outcome>' once one is known.
local function read_sig(entry)
  local counts, outcome = entry, nil
  local bar = string.find(entry, '|', 1, true)
  if bar then counts, outcome = string.sub(entry, 1, bar - 1), string.sub(entry, bar + 1) end
  local sp = string.find(counts, ' ', 1, true)
  if not sp then return tonumber(counts), 0, outcome end
  return tonumber(string.sub(counts, 1, sp - 1)), tonumber(string.sub(counts, sp + 1)), outcome
end

local function write_sig(sig, streak, inflight, outcome)
  local value = int(streak) .. ' ' .. int(inflight)
  if outcome then value = value .. '|' .. outcome end
  redis.call('HSET', SIGS, sig, value)
  wrote(SIGS)
end

local function release(s, rid)
  local amounts = redis.call('HGET', RESV, rid)
  if amounts then
    local sp = string.find(amounts, ' ', 1, true)
    put(s, 'rt', s.rt - tonumber(string.sub(amounts, 1, sp - 1)))
    put(s, 'rc', s.rc - tonumber(string.sub(amounts, sp + 1)))
    redis.call('HDEL', RESV, rid)
  end
  redis.call('ZREM', RES, rid)
  redis.call('ZREM', RESMIN, rid)
end
