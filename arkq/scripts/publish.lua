-- Appends and publishes the events of several jobs, each fenced by its lease (see arkq.lease).
-- For each job i: KEYS[3i-2] its lease, KEYS[3i-1] its replay log, KEYS[3i] its result. ARGV: for each job
-- in turn, its lease token, channel, log TTL (ms), the seq of its first event here, its result JSON ("" for
-- none), the result's TTL (ms), its event count, then its events. A job's events are appended and
-- published only while the caller holds its lease (else -1, nothing written), and only if its log ends
-- where the caller thinks (else -2): a call that the client retried after a lost reply (a Redis restart)
-- finds its events there already and does not append them twice. Returns, per job, the log's new length.
-- A job's result and its terminal event are written together.
local replies, at = {}, 1
for job = 1, #KEYS / 3 do
  local lease, log, result = KEYS[3 * job - 2], KEYS[3 * job - 1], KEYS[3 * job]
  local first, count = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 6])
  local events = at + 7
  local length = redis.call('LLEN', log)
  if redis.call('GET', lease) ~= ARGV[at] then
    replies[job] = -1
  elseif length == first + count then
    replies[job] = length
  elseif length ~= first then
    replies[job] = -2
  else
    if ARGV[at + 4] ~= '' then redis.call('SET', result, ARGV[at + 4], 'PX', ARGV[at + 5]) end
    for i = events, events + count - 1 do
      redis.call('RPUSH', log, ARGV[i])
      redis.call('PUBLISH', ARGV[at + 1], ARGV[i])
    end
    redis.call('PEXPIRE', log, ARGV[at + 2])
    replies[job] = length + count
  end
  at = events + count
end
return replies
