-- settle: deferred tool outcomes of a run, sent on their own (before a read such as snapshot, when they
-- waited too long, or when the process exits). argv: 1 '' (unused), 2 config (ttl), 3... the outcomes.
settle(3)
flush_settled()
for i = 1, #keys do redis.call('PEXPIRE', keys[i], TTL) end
return 1
