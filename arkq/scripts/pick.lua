-- Picks and claims jobs for a worker's free slots: due jobs, in queue order, that no worker holds.
-- KEYS[1]: the queue, KEYS[2]: the pick cursor. ARGV: now (ms), how many jobs are wanted, arq's claim
-- key prefix, the scan limit, the claim's time to live (ms), the cursor's time to live (ms).
-- Each job found is claimed here, as arq's claim does it (its claim key set to "1" for the TTL), in the
-- same step that found it free: no two workers take one job, and none spends round trips on a job
-- another worker took first. Returns the job IDs and their queue scores, flat: id, score, id, score...
--
-- arq keeps a running job in the queue until it ends, so the head of the queue is the jobs running
-- across the fleet. The cursor skips them: every job scored below it was claimed when a pick last
-- looked, so a pick starts at the cursor (inclusive) and leaves it at the last job it looked at. A job
-- can become free below the cursor: enqueued with an earlier score (enqueue.lua deletes the cursor
-- then), or given back (arq re-queues a job it stopped; a dead worker's claim lapses). The cursor's
-- TTL covers those: it is set when a pick starts from the queue's head and kept, never renewed, so
-- at least once a TTL a pick looks at the whole head again.
local wanted, limit, ttl = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local cursor = redis.call('GET', KEYS[2])
local low = cursor or '-inf'
local found, offset, page, last = {}, 0, 256, nil
while offset < limit do
  local entries = redis.call('ZRANGEBYSCORE', KEYS[1], low, ARGV[1], 'WITHSCORES', 'LIMIT', offset, page)
  for i = 1, #entries, 2 do
    local id = entries[i]
    last = entries[i + 1]
    local claim = ARGV[3] .. id
    if redis.call('EXISTS', claim) == 0 then
      redis.call('SET', claim, '1', 'PX', ttl)
      found[#found + 1] = id
      found[#found + 1] = last
      if #found >= 2 * wanted then break end
    end
  end
  if #found >= 2 * wanted or #entries < 2 * page then break end
  offset = offset + page
end
if last then
  if cursor then
    redis.call('SET', KEYS[2], last, 'KEEPTTL')
  else
    redis.call('SET', KEYS[2], last, 'PX', ARGV[6])
  end
end
return found
