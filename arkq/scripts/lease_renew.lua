-- Renews a worker's leases, and tells it which of its jobs were cancelled.
-- KEYS: per job its lease, arq's claim and the cancel flag. ARGV[1]: TTL (ms), then the tokens.
-- Per job: 1 renewed, 0 lost (the lease holds another token or is gone), 2 renewed but cancel requested.
local states = {}
for i = 1, #ARGV - 1 do
  local base = (i - 1) * 3
  if redis.call('GET', KEYS[base + 1]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[base + 1], ARGV[1])
    redis.call('SET', KEYS[base + 2], 'leased', 'PX', ARGV[1])
    states[i] = redis.call('EXISTS', KEYS[base + 3]) == 1 and 2 or 1
  else
    states[i] = 0
  end
end
return states
