-- Picks jobs for a worker's free slots: due jobs, in queue order, that no worker holds.
-- KEYS[1]: the queue. ARGV: now (ms), how many jobs are wanted, arq's claim key prefix, the scan limit.
-- Returns the job IDs.
local wanted, limit = tonumber(ARGV[2]), tonumber(ARGV[4])
local found, offset, page = {}, 0, 256
while offset < limit do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', offset, page)
  for _, id in ipairs(ids) do
    if redis.call('EXISTS', ARGV[3] .. id) == 0 then
      found[#found + 1] = id
      if #found >= wanted then return found end
    end
  end
  if #ids < page then return found end
  offset = offset + page
end
return found
