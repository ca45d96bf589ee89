-- events: read the event log (EventStore.Events; read-only).
-- KEYS: the stream.
-- ARGV: the first entry to read ('-' for the oldest, or an entry id
-- 'ms-seq', read inclusively), the id of the entry some of whose events
-- the reader has ('' for none), how many of its first events it has, and
-- how many events it wants.
-- Each entry has a field n, its number of events, first, then one or
-- more fields e holding their JSON lines in order. Entries are read a few
-- at a time, only as many as hold the events wanted: an entry of many
-- events is not read past.
-- Returns a flat array: the id and the fields of each entry read.
local from, seen, skip, want = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out, got = {}, 0
while got < want do
  local count = want - got + 1
  local es = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', count)
  for _, e in ipairs(es) do
    local n = tonumber(e[2][2])
    if e[1] == seen then
      n = n - skip
    end
    if n > 0 then
      out[#out + 1] = e[1]
      out[#out + 1] = e[2]
      got = got + n
      if got >= want then
        break
      end
    end
  end
  if #es < count then
    break
  end
  from = '(' .. es[#es][1]
end
return out
