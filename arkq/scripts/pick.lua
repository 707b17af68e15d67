-- Picks and claims jobs for a worker's free slots: due jobs, in queue order, that no worker holds.
-- KEYS[1]: the queue. ARGV: now (ms), how many jobs are wanted, arq's claim key prefix, the scan limit,
-- the claim's time to live (ms).
-- Each job found is claimed here, as arq's claim does it (its claim key set to "1" for the TTL), in the
-- same step that found it free: no two workers take one job, and none spends round trips on a job
-- another worker took first. Returns the job IDs and their queue scores, flat: id, score, id, score...
local wanted, limit, ttl = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local found, offset, page = {}, 0, 256
while offset < limit do
  local entries = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', offset, page)
  for i = 1, #entries, 2 do
    local id = entries[i]
    local claim = ARGV[3] .. id
    if redis.call('EXISTS', claim) == 0 then
      redis.call('SET', claim, '1', 'PX', ttl)
      found[#found + 1] = id
      found[#found + 1] = entries[i + 1]
      if #found >= 2 * wanted then return found end
    end
  end
  if #entries < 2 * page then return found end
  offset = offset + page
end
return found
