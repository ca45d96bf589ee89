-- member: open ('j') or close ('l') a device's span in a group, at the
-- group log's newest position, atomically with the group's publishes; or
-- drop ('t') its closed spans that end before position ARGV[3] (their
-- messages are purged).
-- KEYS: seq, mem, members of the group.
-- ARGV: device, 'j', 'l' or 't', [oldest position kept].
-- Returns {newest position, the device's spans "from:to,…" after it}.
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local spans = {}
for f, t in string.gmatch(redis.call('HGET', KEYS[2], ARGV[1]) or '', '(%d+):(%d+)') do
  spans[#spans + 1] = {tonumber(f), tonumber(t)}
end
local n = #spans
local open = n > 0 and spans[n][2] == 0
if ARGV[2] == 'j' and not open then
  -- A new span even when the last one ended here: the device's cursor
  -- may have been dropped with everything up to there settled.
  spans[n + 1] = {last, 0}
  redis.call('SADD', KEYS[3], ARGV[1])
elseif ARGV[2] == 'l' and open then
  if spans[n][1] >= last then
    spans[n] = nil -- a span that holds no position
  else
    spans[n][2] = last
  end
  redis.call('SREM', KEYS[3], ARGV[1])
elseif ARGV[2] == 't' then
  local kept = {}
  for _, s in ipairs(spans) do
    if s[2] == 0 or s[2] >= tonumber(ARGV[3]) then
      kept[#kept + 1] = s
    end
  end
  spans = kept
end
local parts = {}
for _, s in ipairs(spans) do
  parts[#parts + 1] = string.format('%d:%d', s[1], s[2])
end
local enc = table.concat(parts, ',')
if enc == '' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], enc)
end
return {string.format('%d', last), enc}
