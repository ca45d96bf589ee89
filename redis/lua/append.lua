-- append: append messages to one log (Publish, second round trip): one
-- entry per message whatever the size of a target group.
-- KEYS: seq, log, ids, idem, members of the log's tag.
-- ARGV: kind ('d' device, 'g' group), then for each message 6 values: id,
-- client id ('' for none), publishedMs, publishedSub, expiry
-- ("expMs|expSub"), record.
-- A message whose id is in ids, or whose client id has an entry in idem
-- that expires after its publication, is a duplicate: nothing is written.
-- Returns a flat array, 4 values per message: 'n' (new) or 'd'
-- (duplicate), the id (of the original for a duplicate), its position and
-- its recipient count.
local function after(ams, asub, bms, bsub)
  return ams > bms or (ams == bms and asub > bsub)
end
local out = {}
for i = 2, #ARGV, 6 do
  local id, cid = ARGV[i], ARGV[i + 1]
  local dup
  local old = redis.call('HGET', KEYS[3], id)
  if old then
    local seq, n = string.match(old, '^(%d+)|(%d+)$')
    dup = {'d', id, seq, n}
  elseif cid ~= '' then
    local e = redis.call('HGET', KEYS[4], cid)
    if e then
      local ems, esub, n, seq, eid = string.match(e, '^(%-?%d+)|(%d+)|(%d+)|(%d+)|(.+)$')
      if ems and after(tonumber(ems), tonumber(esub), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])) then
        dup = {'d', eid, seq, n}
      end
    end
  end
  if dup then
    for _, v in ipairs(dup) do out[#out + 1] = v end
  else
    local seq = redis.call('INCR', KEYS[1])
    local n = 1
    if ARGV[1] == 'g' then
      n = redis.call('SCARD', KEYS[5])
    end
    redis.call('ZADD', KEYS[2], seq, ARGV[i + 5])
    redis.call('HSET', KEYS[3], id, seq .. '|' .. n)
    if cid ~= '' then
      redis.call('HSET', KEYS[4], cid, ARGV[i + 4] .. '|' .. n .. '|' .. seq .. '|' .. id)
    end
    out[#out + 1] = 'n'
    out[#out + 1] = id
    out[#out + 1] = tostring(seq)
    out[#out + 1] = tostring(n)
  end
end
return out
