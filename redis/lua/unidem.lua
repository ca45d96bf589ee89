-- unidem: drop the idempotency entries of purged messages that still
-- point to them (a later message may have taken the client id since).
-- KEYS: idem of the log's tag.
-- ARGV: pairs of client id, message id.
for i = 1, #ARGV, 2 do
  local e = redis.call('HGET', KEYS[1], ARGV[i])
  local tail = '|' .. ARGV[i + 1]
  if e and string.sub(e, -#tail) == tail then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 0
