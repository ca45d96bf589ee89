-- intent: record messages in their expiry bucket before they are appended
-- to their logs (Publish, first round trip): the expiry index entry and
-- the message's meta, "target\nclient id".
-- KEYS: due (zset), meta (hash) of the bucket.
-- ARGV: for each message, 3 values: id, due member, meta.
-- Returns for each message '' when it was recorded now, or the meta
-- already recorded under its id (a retried publish, or a conflict).
local out = {}
for i = 1, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 2]) == 1 then
    redis.call('ZADD', KEYS[1], 0, ARGV[i + 1])
    out[#out + 1] = ''
  else
    out[#out + 1] = redis.call('HGET', KEYS[2], ARGV[i])
  end
end
return out
