-- purge: delete deliveries of one device (Expire, for purged messages).
-- KEYS: open (zset), dlv (hash), msg (hash) of the device.
-- ARGV: message ids.
-- Returns how many of them were still open (they count as expired).
local n = 0
for _, id in ipairs(ARGV) do
  local d = redis.call('HGET', KEYS[2], id)
  if d then
    local st = string.sub(d, 1, 1)
    if st == 'p' or st == 'i' then
      n = n + 1
    end
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[3], id)
  end
end
return n
