-- pending: the open deliveries of one device after a message id, in id
-- order, skipping those whose message has expired at now (read-only).
-- KEYS: open (zset), dlv (hash), msg (hash) of the device.
-- ARGV: after ('' for all), limit, nowMs, nowSub, scan (the most index
-- entries to look at).
-- Returns a flat array: id, state, attempts, record for each delivery.
local lo = '-'
if ARGV[1] ~= '' then
  lo = '(' .. ARGV[1]
end
local limit = tonumber(ARGV[2])
local nowMs, nowSub = tonumber(ARGV[3]), tonumber(ARGV[4])
local budget = tonumber(ARGV[5])
local out, found = {}, 0
while found < limit and budget > 0 do
  local ids = redis.call('ZRANGEBYLEX', KEYS[1], lo, '+', 'LIMIT', 0, math.min(limit - found + 8, budget))
  if #ids == 0 then
    break
  end
  budget = budget - #ids
  for _, id in ipairs(ids) do
    local d = redis.call('HGET', KEYS[2], id)
    if d then
      local st, att, ems, esub = string.match(d, '^(%a)|(%d+)|(%-?%d+)|(%d+)|')
      ems, esub = tonumber(ems), tonumber(esub)
      if ems > nowMs or (ems == nowMs and esub > nowSub) then
        local rec = redis.call('HGET', KEYS[3], id)
        if rec then
          out[#out + 1] = id
          out[#out + 1] = st
          out[#out + 1] = att
          out[#out + 1] = rec
          found = found + 1
          if found == limit then
            break
          end
        end
      end
    end
  end
  lo = '(' .. ids[#ids]
end
return out
