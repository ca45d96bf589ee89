-- sent: record how far the webhook sender's lease holder has sent
-- (EventStore.Sent). Event ids have a fixed width, so string order is log
-- order; the record only moves forward.
-- KEYS: lease, sent.
-- ARGV: holder, the id of the last event sent ('' records nothing).
-- Returns 1 when holder has the lease (and the id is recorded), 0 when it
-- has not.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local cur = redis.call('GET', KEYS[2])
if ARGV[2] ~= '' and (not cur or ARGV[2] > cur) then
  redis.call('SET', KEYS[2], ARGV[2])
end
return 1
