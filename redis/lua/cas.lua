-- cas (a unit script, see units.lua): replace a device's cursors if they
-- are still what the caller read, and add the history ranges the change
-- produced.
-- keys: the cursors key, then history keys, all of the device's tag.
-- args: the cursors read ('' for none), the new cursors ('' to delete),
-- then 3 values per history range: index of its key in keys, score,
-- member.
-- Returns 1 when written (or when the new cursors are the ones read),
-- the current cursors (a string) when they changed meanwhile (nothing
-- written).
local function unit(keys, args)
  local cur = redis.call('GET', keys[1]) or ''
  if cur ~= args[1] then
    return cur
  end
  if args[2] == '' then
    if cur ~= '' then
      redis.call('DEL', keys[1])
    end
  elseif args[2] ~= cur then
    redis.call('SET', keys[1], args[2])
  end
  for i = 3, #args, 3 do
    redis.call('ZADD', keys[tonumber(args[i])], args[i + 1], args[i + 2])
  end
  return 1
end
