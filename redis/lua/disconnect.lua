-- disconnect: forget a device's session if it is still the current one,
-- keeping when it was last seen.
-- KEYS[1] P:{d:D}:presence
-- ARGV    session, seen (unix ns)
-- answer  1 when the entry was the session's, 0 when a newer one holds it
if redis.call('HGET', KEYS[1], 'session') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'node', '', 'seen', ARGV[2])
return 1
