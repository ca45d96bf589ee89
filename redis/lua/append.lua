-- append: append messages to one log (Publish, second round trip): one
-- entry per message whatever the size of a target group.
-- KEYS: seq, log, ids, idem, members of the log's tag.
-- ARGV: kind ('d' device, 'g' group), then for each message 6 values: id,
-- client id ('' for none), publishedMs, publishedSub, expiry
-- ("expMs|expSub"), record.
-- A message whose id is in ids, or whose client id has an entry in idem
-- that expires after its publication, is a duplicate: nothing is written.
-- The position is taken first and given back for a duplicate (the script
-- is atomic: nobody took another meanwhile), so that a new message costs
-- three writes and no read.
-- Returns a flat array, 4 values per message: 'n' (new) or 'd'
-- (duplicate), the id (of the original for a duplicate), its position and
-- its recipient count.
local function after(ams, asub, bms, bsub)
  return ams > bms or (ams == bms and asub > bsub)
end
local n = 1
if ARGV[1] == 'g' then
  n = redis.call('SCARD', KEYS[5])
end
local out = {}
for i = 2, #ARGV, 6 do
  local id, cid = ARGV[i], ARGV[i + 1]
  local seq = redis.call('INCR', KEYS[1])
  local dup
  if redis.call('HSETNX', KEYS[3], id, seq .. '|' .. n) == 0 then
    local old = redis.call('HGET', KEYS[3], id)
    local s, m = string.match(old, '^(%d+)|(%d+)$')
    dup = {'d', id, s, m}
  elseif cid ~= '' then
    local e = redis.call('HGET', KEYS[4], cid)
    if e then
      local ems, esub, m, s, eid = string.match(e, '^(%-?%d+)|(%d+)|(%d+)|(%d+)|(.+)$')
      if ems and after(tonumber(ems), tonumber(esub), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])) then
        dup = {'d', eid, s, m}
        redis.call('HDEL', KEYS[3], id)
      end
    end
  end
  if dup then
    redis.call('DECR', KEYS[1])
    for _, v in ipairs(dup) do out[#out + 1] = v end
  else
    redis.call('ZADD', KEYS[2], seq, ARGV[i + 5])
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
