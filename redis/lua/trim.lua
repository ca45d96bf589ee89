-- trim: when a log's oldest retained position moved trimEvery past the
-- last trim, or the log is empty, record the trim and, for a device's
-- log, drop the device's history below that position (a group's members
-- are trimmed by the caller, on their own shards).
-- KEYS: log, seq, trim of the log's tag, then for a device's log its
-- history in it.
-- ARGV: trimEvery.
-- Returns the position below which the caller trims a group's members,
-- '0' for none.
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local oldest = last + 1
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 2 then
  oldest = tonumber(first[2])
end
local trimmed = tonumber(redis.call('GET', KEYS[3]) or '0')
if oldest - math.min(trimmed, oldest) < tonumber(ARGV[1]) and oldest <= last then
  return '0'
end
local at = string.format('%d', oldest)
redis.call('SET', KEYS[3], at)
if KEYS[4] then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. at)
  return '0'
end
return at
