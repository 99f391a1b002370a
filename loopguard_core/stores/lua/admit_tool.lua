-- admit_tool: pre-flight check of one tool call; admits and counts it, or refuses (and trips).
-- ARGV: 1 clock, 2 config (ttl, max_tool_calls, max calls of this tool, max_consecutive_failures,
--       repeats allowed (nil = loop detection off for this tool), repeats allowed while waiting,
--       signatures remembered, recovery window (us), max_seconds (us), max_empty_results, similarity),
--       3 call id, 4 tool, 5 signature, 6 agent ('' or '=' .. agent), 7 question words ('' if none).
local has_id, id = call_id()
local key = has_id and ('t:' .. id) or nil
local tool, sig, words = ARGV[4], ARGV[5], ARGV[7]
local max_calls, per_tool, max_fail = tonumber(CFG[2]), tonumber(CFG[3]), tonumber(CFG[4])
local allowed, allowed_waiting, memory = tonumber(CFG[5]), tonumber(CFG[6]), tonumber(CFG[7])
local recovery, max_seconds = tonumber(CFG[8]), tonumber(CFG[9])
local max_empty, similarity = tonumber(CFG[10]), tonumber(CFG[11])
local asks = allowed and similarity and words ~= ''
local v = redis.call('HMGET', H, 'S', 'n:' .. tool, 'f:' .. tool, 's:' .. sig, key and ('i:' .. key) or 'S',
  'e:' .. tool, asks and ('q:' .. tool) or 'S')
if key and v[5] then return { 2, v[5] } end
local request = key and { tool, sig, ARGV[6] } or nil

local now, s, moves = clock(), state(v[1]), {}
start(s, now)
local refused = gate(s, now, recovery, moves)
if refused then return finish(s, now, key, refused, moves, request) end
local half = s.st == 'h'
if half and s.pk ~= '' and now < s.pu then
  return finish(s, now, key, { 0, 'probe_busy', 0, s.turns, 0, '', s.tr }, moves, request)
end

local function refuse(reason, limit, observed, ...)
  return finish(s, now, key, trip(s, reason, now, moves, tool, limit, observed, ...), moves, request)
end
local elapsed = over_time(s, now, max_seconds)
if elapsed then return refuse('wall_clock', max_seconds, elapsed) end
if max_calls and s.tc + 1 > max_calls then return refuse('tool_ceiling', max_calls, s.tc + 1, 'all') end
local used = tonumber(v[2]) or 0
if per_tool and used + 1 > per_tool then return refuse('tool_ceiling', per_tool, used + 1, 'tool') end
-- A half-open probe may retry the failing tool: that is how recovery is tested.
local failed = tonumber(v[3]) or 0
if max_fail and not half and failed >= max_fail then return refuse('failures', max_fail, failed) end
local entry = v[4]
local streak, inflight, waiting, outcome = 0, 0, false, nil
if entry then streak, inflight, waiting, outcome = read_sig(entry) end
if allowed then -- loop detection is on for this tool
  if entry then
    -- An answer saying "still running" earns the same patience as a tool named like a status poll.
    local limit = waiting and allowed_waiting or allowed
    if streak >= limit then return refuse('loop', limit, '', streak) end
  end
  -- Repeats a signature cannot see: empty answers in a row, the same question reworded.
  local empties = tonumber(v[6] and string.match(v[6], '^(%d+)') or 0)
  if max_empty and empties >= max_empty then return refuse('stall', max_empty, empties) end
  if asks and v[7] then
    local mine, n_mine, numbers, n_numbers = word_sets(words)
    local ring, answers, first, same = cmsgpack.unpack(v[7]), 0, nil, true
    for i = #ring, 1, -1 do
      if answers >= allowed then break end
      local theirs, n_theirs, their_numbers, n_their_numbers = word_sets(ring[i][1])
      -- Numbers identify things (page 2, job 7): different numbers are different questions.
      local numbers_match = n_numbers == n_their_numbers
      if numbers_match then
        for w in pairs(numbers) do
          if not their_numbers[w] then numbers_match = false break end
        end
      end
      if numbers_match then
        local common = 0
        for w in pairs(mine) do if theirs[w] then common = common + 1 end end
        if common >= similarity * (n_mine + n_theirs - common) then
          answers = answers + 1
          if first == nil then first = ring[i][2] elseif ring[i][2] ~= first then same = false end
        end
      end
    end
    if answers >= allowed and same then return refuse('loop', allowed, '', allowed, 'similar') end
  end
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
put(s, 'seq', s.seq + 1)
redis.call('ZADD', LRU, int(s.seq), sig)
if not entry then
  if s.ln == 0 then created(LRU) end
  if s.ln + 1 > memory then -- forget the least recently used signature
    redis.call('HDEL', H, 's:' .. redis.call('ZPOPMIN', LRU)[1])
  else
    put(s, 'ln', s.ln + 1)
  end
end
-- Counted as a repeat until its outcome shows otherwise (pre-flight-only callers still catch loops).
write_sig(sig, streak + 1, inflight + 1, waiting, outcome)
local probe = 0
if half then
  put(s, 'pk', (has_id and id ~= '') and id or sig)
  put(s, 'pu', now + recovery)
  probe = 1
end
return finish(s, now, key, { 1, '', 0, s.turns, probe, '' }, moves, request)
