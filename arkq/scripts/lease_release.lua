-- Gives a lease up, if it is still the caller's.
-- KEYS[1]: lease. ARGV[1]: token. Returns 1 if deleted, 0 if the lease was not the caller's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
