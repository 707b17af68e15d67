-- Takes a job's lease for a new attempt, and marks arq's claim as leased.
-- KEYS[1]: lease, KEYS[2]: arq's claim. ARGV: token, TTL (ms). 1 if taken, 0 if another attempt holds it.
-- While the job runs, arq's claim holds 'leased' (not arq's '1'), which the reaper leaves alone.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], 'leased', 'PX', ARGV[2])
return 1
