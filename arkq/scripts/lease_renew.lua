-- Renews a worker's leases, and tells it which of its jobs were cancelled.
-- KEYS: per job its lease, arq's claim and the cancel flag. ARGV[1]: TTL (ms), then per job its token
-- and "1" to check its lease and extend it (and arq's claim) by the TTL, or "0" to look at its cancel
-- flag only: a lease is extended once about a third of its TTL has passed, not every round, so most
-- rounds cost Redis one command a job, not four.
-- Per job: 1 held (or not looked at), 0 lost (the lease holds another token or is gone), 2 cancel
-- requested.
local states = {}
for i = 1, (#ARGV - 1) / 2 do
  local base = (i - 1) * 3
  if ARGV[2 * i + 1] == '0' then
    states[i] = redis.call('EXISTS', KEYS[base + 3]) == 1 and 2 or 1
  elseif redis.call('GET', KEYS[base + 1]) == ARGV[2 * i] then
    redis.call('PEXPIRE', KEYS[base + 1], ARGV[1])
    redis.call('SET', KEYS[base + 2], 'leased', 'PX', ARGV[1])
    states[i] = redis.call('EXISTS', KEYS[base + 3]) == 1 and 2 or 1
  else
    states[i] = 0
  end
end
return states
