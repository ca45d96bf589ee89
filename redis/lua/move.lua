-- move: append outbox entries to the event log, each exactly once (see
-- relay.go). A cursor per slot, the id of the newest outbox entry moved,
-- makes a second move of the same entries (two nodes, or a node that
-- died between this script and its XDEL) append nothing.
-- keys: the event log's stream, the hash of cursors (field: slot).
-- args: the number of entries, then per entry: its outbox's slot, its id,
-- its number of events, its number of e fields and their JSON lines. The
-- entries of one outbox come oldest first.
-- Returns the number of events appended, all as one entry of the log.
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local cursors, changed = {}, {}
local fields, total, a = {}, 0, 2
for _ = 1, tonumber(ARGV[1]) do
  local slot, id, m = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 3])
  local c = cursors[slot]
  if not c then
    local last = redis.call('HGET', KEYS[2], slot)
    c = {-1, -1}
    if last then
      c[1], c[2] = parse(last)
    end
    cursors[slot] = c
  end
  local ms, seq = parse(id)
  if ms > c[1] or (ms == c[1] and seq > c[2]) then
    for f = 1, m do
      fields[#fields + 1] = 'e'
      fields[#fields + 1] = ARGV[a + 3 + f]
    end
    total = total + tonumber(ARGV[a + 2])
    c[1], c[2] = ms, seq
    changed[slot] = id
  end
  a = a + 4 + m
end
local hset = {}
for slot, id in pairs(changed) do
  hset[#hset + 1] = slot
  hset[#hset + 1] = id
end
if #hset > 0 then
  redis.call('HSET', KEYS[2], unpack(hset))
end
if total > 0 then
  redis.call('XADD', KEYS[1], '*', 'n', total, unpack(fields))
end
return total
