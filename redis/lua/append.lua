-- append (a unit script, see units.lua): append messages to one log
-- (Publish, second round trip): one entry per message whatever the size
-- of a target group.
-- keys: seq, log, ids, idem, members of the log's tag.
-- args: kind ('d' device, 'g' group), then for each message 6 values: id,
-- client id ('' for none), publishedMs, publishedSub, expiry
-- ("expMs|expSub"), record.
-- A message whose id is in ids, or whose client id has an entry in idem
-- that expires after its publication, is a duplicate: nothing is written.
-- The position is taken first and given back for a duplicate (the script
-- is atomic: nobody took another meanwhile), so that a new message costs
-- three writes and no read.
-- Returns a flat array, 4 values per message: 'n' (new) or 'd'
-- (duplicate), the id (of the original for a duplicate), its position and
-- its recipient count (numbers, or for a duplicate their text).
local function after(ams, asub, bms, bsub)
  return ams > bms or (ams == bms and asub > bsub)
end
local function unit(keys, args)
  local n = 1
  if args[1] == 'g' then
    n = redis.call('SCARD', keys[5])
  end
  local ns = '|' .. n -- converted once: a number's conversion costs
  local out = {}
  for i = 2, #args, 6 do
    local id, cid = args[i], args[i + 1]
    local seq = redis.call('INCR', keys[1])
    local dup
    local seqs = tostring(seq)
    if redis.call('HSETNX', keys[3], id, seqs .. ns) == 0 then
      local old = redis.call('HGET', keys[3], id)
      local s, m = string.match(old, '^(%d+)|(%d+)$')
      dup = {'d', id, s, m}
    elseif cid ~= '' then
      local e = redis.call('HGET', keys[4], cid)
      if e then
        local ems, esub, m, s, eid = string.match(e, '^(%-?%d+)|(%d+)|(%d+)|(%d+)|(.+)$')
        if ems and after(tonumber(ems), tonumber(esub), tonumber(args[i + 2]), tonumber(args[i + 3])) then
          dup = {'d', eid, s, m}
          redis.call('HDEL', keys[3], id)
        end
      end
    end
    if dup then
      redis.call('DECR', keys[1])
      for _, v in ipairs(dup) do out[#out + 1] = v end
    else
      redis.call('ZADD', keys[2], seq, args[i + 5])
      if cid ~= '' then
        redis.call('HSET', keys[4], cid, args[i + 4] .. ns .. '|' .. seqs .. '|' .. id)
      end
      out[#out + 1] = 'n'
      out[#out + 1] = id
      out[#out + 1] = seq
      out[#out + 1] = n
    end
  end
  return out
end
