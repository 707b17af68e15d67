-- Enqueues one arq job atomically: the duplicate check, the depth limit, the job and the wake-up.
-- KEYS: arq job, arq result, arkq event log, arkq result, queue.
-- ARGV: job id, job bytes, job key TTL (ms), max depth, wake channel, score.
-- Returns 1 (enqueued), 0 (the job exists or existed: not enqueued again), or -1 - depth (queue full).
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3], KEYS[4]) > 0 then return 0 end
local depth = redis.call('ZCARD', KEYS[5])
if depth >= tonumber(ARGV[4]) then return -1 - depth end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[1])
return 1
