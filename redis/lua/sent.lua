-- sent: one more attempt for open deliveries of one device.
-- KEYS: dlv (hash) of the device.
-- ARGV: message ids.
-- Returns the attempt number now recorded for each id, 0 for an id that
-- is unknown or not open.
local out = {}
for i, id in ipairs(ARGV) do
  out[i] = 0
  local d = redis.call('HGET', KEYS[1], id)
  if d then
    local st, att, rest = string.match(d, '^(%a)|(%d+)|(.*)$')
    if st == 'p' or st == 'i' then
      att = tonumber(att) + 1
      redis.call('HSET', KEYS[1], id, 'i|' .. att .. '|' .. rest)
      out[i] = att
    end
  end
end
return out
