-- cas: replace a device's cursors if they are still what the caller read,
-- and add the history ranges the change produced.
-- KEYS: the cursors key, then history keys, all of the device's tag.
-- ARGV: the cursors read ('' for none), the new cursors ('' to delete),
-- then 3 values per history range: index of its key in KEYS, score,
-- member.
-- Returns {1, ''} when written (or when the new cursors are the ones
-- read), {0, the current cursors} when they changed meanwhile (nothing
-- written).
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then
  return {0, cur}
end
if ARGV[2] == '' then
  if cur ~= '' then
    redis.call('DEL', KEYS[1])
  end
elseif ARGV[2] ~= cur then
  redis.call('SET', KEYS[1], ARGV[2])
end
for i = 3, #ARGV, 3 do
  redis.call('ZADD', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
end
return {1, ''}
