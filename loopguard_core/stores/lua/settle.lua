-- settle: deferred tool outcomes of a run, sent on their own (before a read such as snapshot, when they
-- waited too long, or when the process exits). ARGV: 1 '' (unused), 2 config (ttl), 3... the outcomes.
settle(3)
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], TTL) end
return 1
