-- finish: Expire's last step in one bucket, once the cursors are settled:
-- expired messages move from due to gc, purged ones leave the bucket.
-- KEYS: due (zset), gc (zset), meta (hash) of the bucket.
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
return 0
