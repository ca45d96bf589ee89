-- move: append outbox entries to the event log, each exactly once (see
-- relay.go). A cursor per slot, the id of the newest outbox entry moved,
-- makes a second move of the same entries (two nodes, or a node that
-- died between this script and its XDEL) append nothing.
-- keys: the event log's stream, the hash of cursors (field: slot).
-- args: the number of groups, then per group (the entries read from one
-- outbox, oldest first): the slot, the ids of its first and last entries,
-- their number of events and their JSON lines, joined.
-- Returns the number of events appended (as one entry of the log, a field
-- e per group), then the slot and cursor of each group the cursor cuts
-- (another mover moved part of it), which it left alone.
local function after(a, b) -- stream id a is after b
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, bms = tonumber(ams), tonumber(bms)
  return ams > bms or (ams == bms and tonumber(aseq) > tonumber(bseq))
end
local fields, hset, out, total = {}, {}, {"0"}, 0
local a = 2
for _ = 1, tonumber(ARGV[1]) do
  local slot, first, last = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local cursor = redis.call('HGET', KEYS[2], slot)
  if not cursor or after(first, cursor) then
    fields[#fields + 1] = 'e'
    fields[#fields + 1] = ARGV[a + 4]
    total = total + tonumber(ARGV[a + 3])
    hset[#hset + 1] = slot
    hset[#hset + 1] = last
  elseif after(last, cursor) then
    out[#out + 1] = slot
    out[#out + 1] = cursor
  end
  a = a + 5
end
if #hset > 0 then
  redis.call('HSET', KEYS[2], unpack(hset))
end
if total > 0 then
  redis.call('XADD', KEYS[1], '*', 'n', total, unpack(fields))
end
out[1] = tostring(total)
return out
