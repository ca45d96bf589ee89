-- intent: record messages in their expiry bucket before any delivery is
-- written (Publish, phase 2): meta, expiry index entry and record.
-- KEYS: due (zset), meta (hash) of the bucket, then the record key of
-- each message.
-- ARGV: for each message, 3 values: id, due member, meta; records follow
-- the messages, one per record key.
-- Returns for each message '' when it was recorded now, or the meta
-- already stored under its id (a retried publish, or a conflict).
local out = {}
local count = #KEYS - 2
for i = 1, count do
  local b = (i - 1) * 3
  local id = ARGV[b + 1]
  local old = redis.call('HGET', KEYS[2], id)
  if old then
    out[i] = old
  else
    redis.call('HSET', KEYS[2], id, ARGV[b + 3])
    redis.call('ZADD', KEYS[1], 0, ARGV[b + 2])
    redis.call('SET', KEYS[2 + i], ARGV[count * 3 + i])
    out[i] = ''
  end
end
return out
