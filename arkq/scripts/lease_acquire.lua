-- Takes a job's lease for a new attempt, marks arq's claim as leased, and reads what the attempt starts
-- from, in the one round trip a job's start costs.
-- KEYS[1]: lease, KEYS[2]: arq's claim, KEYS[3]: the job's event log, KEYS[4]: its cancel request.
-- ARGV: token, TTL (ms). Returns {0} if another attempt holds the lease; else {1, cancelled (1 or 0),
-- the log's events...}. While the job runs, arq's claim holds 'leased' (not arq's '1'), which the reaper
-- leaves alone.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
redis.call('SET', KEYS[2], 'leased', 'PX', ARGV[2])
local taken = {1, redis.call('EXISTS', KEYS[4])}
for _, event in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do taken[#taken + 1] = event end
return taken
