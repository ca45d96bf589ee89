-- unidem: delete idempotency entries that still point to a purged message.
-- KEYS: idem (hash) of the target.
-- ARGV: pairs of client id and the entry the purged message wrote.
-- Returns how many entries were deleted.
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
