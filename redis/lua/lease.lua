-- lease: take or renew the webhook sender's lease (EventStore.Lease). A
-- holder may renew with a shorter ttl than it took (a sender on its way
-- out shortens it so that the next need not wait).
-- KEYS: lease, sent.
-- ARGV: holder, ttl in milliseconds.
-- Returns {1, the last event sent ('' for none)} when holder has the
-- lease now, {0, ''} when another holder has it.
local h = redis.call('GET', KEYS[1])
if h and h ~= ARGV[1] then
  return {0, ''}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, redis.call('GET', KEYS[2]) or ''}
