-- purge: delete purged messages from one log, with their id and their
-- idempotency entry when it still points to them.
-- KEYS: log, ids, idem of the log's tag.
-- ARGV: for each message, 3 values: position, id, client id ('' for none).
for i = 1, #ARGV, 3 do
  redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[i], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i + 1])
  if ARGV[i + 2] ~= '' then
    local e = redis.call('HGET', KEYS[3], ARGV[i + 2])
    local tail = '|' .. ARGV[i + 1]
    if e and string.sub(e, -#tail) == tail then
      redis.call('HDEL', KEYS[3], ARGV[i + 2])
    end
  end
end
return 0
