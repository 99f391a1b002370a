-- Run first by every step sent as a script (never in the Function library, where effects are always replicated
-- and this call does not exist): on Redis < 7, scripts must ask for effects replication to read TIME and then write.
if redis.replicate_commands then pcall(redis.replicate_commands) end
