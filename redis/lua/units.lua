-- units: run unit(keys, args) for each unit of the call (see units.go).
-- KEYS: the keys of every unit in order.
-- ARGV: the number of units n, then n pairs (number of keys, number of
-- arguments), then the arguments of every unit in order.
-- Returns the answers of the units, an array. The tables keys and args
-- are reused from unit to unit (a script's garbage costs Redis CPU).
-- The events the units reported (see prelude.lua) become one entry of
-- the event log's stream: n their number, then a field e per unit with
-- its events' JSON lines.
local n = tonumber(ARGV[1])
local out = {}
local keys, args = {}, {}
local k, a = 1, 2 + 2 * n
for u = 1, n do
  local kn, an = tonumber(ARGV[2 * u]), tonumber(ARGV[2 * u + 1])
  for i = kn + 1, #keys do
    keys[i] = nil
  end
  for i = an + 1, #args do
    args[i] = nil
  end
  for i = 1, kn do
    keys[i] = KEYS[k]
    k = k + 1
  end
  for i = 1, an do
    args[i] = ARGV[a]
    a = a + 1
  end
  out[u] = unit(keys, args)
end
if events.n > 0 then
  redis.call('XADD', events.key, '*', 'n', events.n, unpack(events))
end
return out
