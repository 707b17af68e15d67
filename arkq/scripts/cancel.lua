-- Cancels a job: a queued one is ended here and never runs; a running one is flagged for its worker.
-- KEYS: cancel flag, lease, result, queue, arq job, event log, arq's claim.
-- ARGV: job id, channel, keep ms, log TTL ms, event prefix, event suffix, result JSON, the queue's
-- cancels channel.
-- The flag is always set. A running job's cancel is announced on the queue's cancels channel, and its
-- worker stops it at once; the flag is what a worker that missed the message (its connection was
-- down) finds at its next lease renewal round. A job still in the queue and not running is
-- removed from it and ended here, atomically, so no worker can start it.
if redis.call('EXISTS', KEYS[3]) == 1 then return 'ended' end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[3])
if redis.call('EXISTS', KEYS[2], KEYS[7]) > 0 then
  redis.call('PUBLISH', ARGV[8], ARGV[1])
  return 'cancelling'
end
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 'unknown'
end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[5])
local event = ARGV[5] .. redis.call('LLEN', KEYS[6]) .. ARGV[6]
redis.call('RPUSH', KEYS[6], event)
redis.call('PEXPIRE', KEYS[6], ARGV[4])
redis.call('PUBLISH', ARGV[2], event)
redis.call('SET', KEYS[3], ARGV[7], 'PX', ARGV[3])
return 'cancelled'
