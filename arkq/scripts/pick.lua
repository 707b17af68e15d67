-- Picks and claims jobs for a worker's free slots: due jobs, in queue order, that no worker holds.
-- KEYS[1]: the queue, KEYS[2]: the pick cursor. ARGV: now (ms), how many jobs are wanted, arq's claim
-- key prefix, the scan limit, the claim's time to live (ms), the cursor's time to live (ms).
-- Each job found is claimed here, as arq's claim does it (its claim key set to "1" for the TTL), in the
-- same step that found it free: no two workers take one job, and none spends round trips on a job
-- another worker took first. Returns the job IDs and their queue scores, flat: id, score, id, score...
--
-- arq keeps a running job in the queue until it ends, so the head of the queue is the jobs running
-- across the fleet. The cursor (lib/cursor.lua) skips them: it is the last job a pick looked at, and every
-- job before it in the queue's order (score, then ID) was claimed when a pick last looked; so a pick
-- starts at the cursor's score and passes over the jobs of that score up to its ID. Jobs enqueued in
-- one millisecond share a score: without the ID, every pick would look at all of them again. A job can
-- become free before the cursor: enqueued before it (enqueue.lua moves the cursor back to that job's
-- score then), or given back (arq re-queues a job it stopped; a dead worker's claim lapses). The
-- cursor's TTL covers those: it is set when a pick starts from the queue's head and kept, never
-- renewed, so at least once a TTL a pick looks at the whole head again.
local wanted, limit, ttl = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
local cursor = redis.call('GET', KEYS[2])
local low, after = '-inf', nil
if cursor then low, after = cursor_parts(cursor) end
local low_score = tonumber(low)
local found, offset, page, last, last_id = {}, 0, 256, nil, nil
while offset < limit do
  local entries = redis.call('ZRANGEBYSCORE', KEYS[1], low, ARGV[1], 'WITHSCORES', 'LIMIT', offset, page)
  for i = 1, #entries, 2 do
    local id, score = entries[i], entries[i + 1]
    if not (after and tonumber(score) == low_score and not bytes_before(after, id)) then
      last, last_id = score, id
      if redis.call('SET', ARGV[3] .. id, '1', 'NX', 'PX', ttl) then
        found[#found + 1] = id
        found[#found + 1] = score
        if #found >= 2 * wanted then break end
      end
    end
  end
  if #found >= 2 * wanted or #entries < 2 * page then break end
  offset = offset + page
end
if last then
  if cursor then
    redis.call('SET', KEYS[2], cursor_of(last, last_id), 'KEEPTTL')
  else
    redis.call('SET', KEYS[2], cursor_of(last, last_id), 'PX', ARGV[6])
  end
end
return found
