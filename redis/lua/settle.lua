-- settle: open deliveries of one device become acked, dead or expired;
-- they leave the open index and their copy of the message is dropped.
-- KEYS: open (zset), dlv (hash), msg (hash) of the device.
-- ARGV: state ('a', 'd' or 'e'), ackedAt ('' unless acked), message ids.
-- Returns how many deliveries were open.
local n = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local d = redis.call('HGET', KEYS[2], id)
  if d then
    local st = string.sub(d, 1, 1)
    if st == 'p' or st == 'i' then
      -- An open delivery ends with '|' and an empty ackedAt.
      redis.call('HSET', KEYS[2], id, ARGV[1] .. string.sub(d, 2) .. ARGV[2])
      redis.call('ZREM', KEYS[1], id)
      redis.call('HDEL', KEYS[3], id)
      n = n + 1
    end
  end
end
return n
