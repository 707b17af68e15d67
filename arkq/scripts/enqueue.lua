-- Enqueues one arq job atomically: the duplicate check, the limits, the job, its owner and the wake-up.
-- KEYS: arq job, arq result, arkq event log, arkq result, queue, owner, the owner's active jobs (zset),
--       the request's digest, the queue's pick cursor (pick.lua).
-- ARGV: job id, job bytes, job key TTL (ms), max depth, wake channel, score,
--       owner ('' for none), the owner's max active jobs (0: no limit), owner TTL (ms), arq job prefix,
--       the request's digest, the digest's TTL (ms).
-- Returns {1, 0} (enqueued), {0, 0} (the job exists or existed, with the same request: not enqueued
-- again), {-3, 0} (the job exists with another request's digest: nothing written), {-1, depth} (the
-- queue is full) or {-2, active} (the owner has its limit of jobs queued or running).
-- A job enqueued before digests were kept has none: it counts as the same request.
-- An owner's active set is pruned here of jobs that have ended (their arq job key is gone: arq deletes
-- it when a job ends, cancel.lua when it cancels a queued one), so it needs no upkeep elsewhere.
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3], KEYS[4]) > 0 then
  local digest = redis.call('GET', KEYS[8])
  if digest and digest ~= ARGV[11] then return {-3, 0} end
  return {0, 0}
end
local depth = redis.call('ZCARD', KEYS[5])
if depth >= tonumber(ARGV[4]) then return {-1, depth} end
local owner = ARGV[7]
if owner ~= '' then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[7], 0, -1)) do
    if redis.call('EXISTS', ARGV[10] .. id) == 0 then redis.call('ZREM', KEYS[7], id) end
  end
  local active = redis.call('ZCARD', KEYS[7])
  local limit = tonumber(ARGV[8])
  if limit > 0 and active >= limit then return {-2, active} end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[1])
local cursor = redis.call('GET', KEYS[9])
if cursor then  -- a job before it in the queue's order moves it back
  local score, id = cursor_parts(cursor)
  local mine, theirs = tonumber(ARGV[6]), tonumber(score)
  if mine < theirs or (mine == theirs and bytes_before(ARGV[1], id)) then
    redis.call('SET', KEYS[9], cursor_of(ARGV[6], ''), 'KEEPTTL')  -- picks start at this job's score
  end
end
redis.call('SET', KEYS[8], ARGV[11], 'PX', ARGV[12])
if owner ~= '' then
  redis.call('SET', KEYS[6], owner, 'PX', ARGV[9])
  redis.call('ZADD', KEYS[7], ARGV[6], ARGV[1])
  redis.call('PEXPIRE', KEYS[7], ARGV[3])
end
redis.call('PUBLISH', ARGV[5], ARGV[1])
return {1, 0}
