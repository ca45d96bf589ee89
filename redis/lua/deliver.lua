-- deliver: write new pending deliveries of one device (Publish, phase 3).
-- KEYS: open (zset), dlv (hash), msg (hash) of the device.
-- ARGV: for each message, 4 values: id, expMs, expSub, record.
-- A delivery that exists already (a retried publish) is left as it is.
-- Returns how many deliveries were written.
local n = 0
for i = 1, #ARGV, 4 do
  local id = ARGV[i]
  if redis.call('HSETNX', KEYS[2], id, 'p|0|' .. ARGV[i + 1] .. '|' .. ARGV[i + 2] .. '|') == 1 then
    redis.call('HSET', KEYS[3], id, ARGV[i + 3])
    redis.call('ZADD', KEYS[1], 0, id)
    n = n + 1
  end
end
return n
