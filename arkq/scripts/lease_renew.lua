-- Renews a worker's leases, and tells it which of its jobs were cancelled.
-- KEYS: per job its lease, arq's claim and the cancel flag. ARGV[1]: TTL (ms), then per job its token
-- and "1" to extend its lease (and arq's claim) by the TTL, or "0" to check it only: a lease is
-- extended once a third of its TTL has passed, not every round, so a round costs Redis two commands
-- for most jobs, not four.
-- Per job: 1 held, 0 lost (the lease holds another token or is gone), 2 held but cancel requested.
local states = {}
for i = 1, (#ARGV - 1) / 2 do
  local base = (i - 1) * 3
  if redis.call('GET', KEYS[base + 1]) == ARGV[2 * i] then
    if ARGV[2 * i + 1] == '1' then
      redis.call('PEXPIRE', KEYS[base + 1], ARGV[1])
      redis.call('SET', KEYS[base + 2], 'leased', 'PX', ARGV[1])
    end
    states[i] = redis.call('EXISTS', KEYS[base + 3]) == 1 and 2 or 1
  else
    states[i] = 0
  end
end
return states
