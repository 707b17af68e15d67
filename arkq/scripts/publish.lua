-- Appends and publishes the events of several jobs, each fenced by its lease (see arkq.lease).
-- For each job i: KEYS[3i-2] its lease, KEYS[3i-1] its replay log, KEYS[3i] its result. ARGV: for each job
-- in turn, one header, "token\nlog TTL (ms, 0: leave it)\nseq of its first event here\nevent count\n
-- result TTL (ms)\nchannel" (the channel last: it is a setting, and may hold anything), its result JSON
-- when the result TTL is not 0, then its events. One header a job, not six arguments: the worker encodes every argument
-- of every call, and at a GPU's pace a job has one event in most calls.
-- A job's events are appended and published only while the caller holds its lease (else -1, nothing
-- written), and only if its log ends where the caller thinks (else -2): a call that the client retried
-- after a lost reply (a Redis restart) finds its events there already and does not append them twice.
-- Returns, per job, the log's new length. A job's result and its terminal event are written together,
-- and the call that writes them also gives the lease up (the attempt has nothing left to fence), so a
-- job ends in one round trip; a retry of that call finds the lease gone, its events there and its own
-- result stored (another attempt's end, a stalled one's retry, is refused as before).
local replies, at = {}, 1
for job = 1, #KEYS / 3 do
  local lease, log, result = KEYS[3 * job - 2], KEYS[3 * job - 1], KEYS[3 * job]
  local token, ttl, first, count, keep, channel =
    string.match(ARGV[at], '^(.-)\n(%d+)\n(%d+)\n(%d+)\n(%d+)\n(.*)$')
  first, count = tonumber(first), tonumber(count)
  local events = at + 1
  if keep ~= '0' then events = at + 2 end
  local length = redis.call('LLEN', log)
  local holder = redis.call('GET', lease)
  if length == first + count and (holder == token or (keep ~= '0' and not holder
      and redis.call('GET', result) == ARGV[at + 1])) then
    replies[job] = length
  elseif holder ~= token then
    replies[job] = -1
  elseif length ~= first then
    replies[job] = -2
  else
    if keep ~= '0' then redis.call('SET', result, ARGV[at + 1], 'PX', keep) end
    if count > 0 then redis.call('RPUSH', log, unpack(ARGV, events, events + count - 1)) end
    for i = events, events + count - 1 do
      redis.call('PUBLISH', channel, ARGV[i])
    end
    if ttl ~= '0' then redis.call('PEXPIRE', log, ttl) end
    if keep ~= '0' then redis.call('DEL', lease) end
    replies[job] = length + count
  end
  at = events + count
end
return replies
