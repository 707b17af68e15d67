-- Releases arq claims whose worker died between claiming the job and taking its lease.
-- KEYS[1]: the queue. ARGV: now (ms), scan limit, arq's claim TTL (ms), age (ms) of a claim that should
-- have become a lease long ago, arq's claim key prefix. Returns how many dead claims were removed.
-- A claim still holding arq's '1' that old was never leased; a leased one holds 'leased'.
local reaped = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
  local key = ARGV[5] .. id
  if redis.call('GET', key) == '1' then
    local ttl = redis.call('PTTL', key)
    if ttl > 0 and ttl < tonumber(ARGV[3]) - tonumber(ARGV[4]) then
      redis.call('DEL', key)
      reaped = reaped + 1
    end
  end
end
return reaped
