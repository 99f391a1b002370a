-- record_tool: what a tool call returned; appends it to the run's window, updates the failure streak
-- and settles a half-open probe (the work is _common.lua's outcome(): deferred outcomes run it too).
-- argv: 1 clock, 2 config (ttl, window size), 3 call id, 4 tool, 5 signature, 6 failed (0/1), 7 the
--       step without its call number (packed by the client; digests and flags only), 8 the outcome's
--       digest (a failure streak counts the same error again and again; another error starts over),
--       9... deferred outcomes of the run recorded before this one (see settle).
settle(9)
local moves = {}
local s, now, key, r = outcome(argv[1], CFG[2], argv[3], argv[4], argv[5], argv[6], argv[7], argv[8], moves)
if not s then flush_settled() return { 2, now } end
return finish(s, now, key, r, moves, nil)
