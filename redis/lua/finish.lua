-- finish: Expire's last step in one bucket, once the deliveries are done:
-- expired messages move from due to gc, purged ones leave the bucket with
-- their meta and record.
-- KEYS: due (zset), gc (zset), meta (hash) of the bucket, then the record
-- keys of the purged messages.
-- ARGV: pairs of op ('g' to gc, 'p' purge) and member.
for i = 1, #ARGV, 2 do
  local m = ARGV[i + 1]
  redis.call('ZREM', KEYS[1], m)
  if ARGV[i] == 'g' then
    redis.call('ZADD', KEYS[2], 0, m)
  else
    redis.call('ZREM', KEYS[2], m)
    redis.call('HDEL', KEYS[3], string.sub(m, 17))
  end
end
for i = 4, #KEYS do
  redis.call('DEL', KEYS[i])
end
return 0
