-- cas (a unit script, see units.lua): replace a device's cursors if they
-- are still what the caller read, add the history ranges the change
-- produced, and report the deliveries it settled in the event log.
-- keys: the cursors key, then history keys, all of the device's tag, and
-- last, when the unit has events, the event log's stream.
-- args: the cursors read ('' for none), the new cursors ('' to delete),
-- the events' JSON lines ('' for none), their number, then 3 values per
-- history range: index of its key in keys, score, member.
-- Returns 1 when written (or when the new cursors are the ones read),
-- the current cursors (a string) when they changed meanwhile (nothing
-- written, no event).
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
  for i = 5, #args, 3 do
    redis.call('ZADD', keys[tonumber(args[i])], args[i + 1], args[i + 2])
  end
  if args[3] ~= '' then
    events.key = keys[#keys]
    events[#events + 1] = 'e'
    events[#events + 1] = args[3]
    events.n = events.n + tonumber(args[4])
  end
  return 1
end
