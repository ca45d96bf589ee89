-- connect: record a device's new session and return the one it replaces.
-- KEYS[1] P:{d:D}:presence
-- ARGV    node, session, connected (unix ns), seen (unix ns)
-- answer  {node, session, connected, seen} of the previous entry (false when none)
local old = redis.call('HMGET', KEYS[1], 'node', 'session', 'connected', 'seen')
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'session', ARGV[2], 'connected', ARGV[3], 'seen', ARGV[4])
return old
