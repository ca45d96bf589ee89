-- intent (a unit script, see units.lua): record messages in their expiry
-- bucket before they are appended to their logs (Publish, first round
-- trip): the expiry index entry and the message's meta, "target\nclient
-- id". An entry at or below the bucket's watermark (done: Expire has
-- passed it, a message published already expired) is also put in late,
-- where Expire looks for it.
-- keys: due (zset), meta (hash), done (string), late (zset) of the bucket.
-- args: for each message, 3 values: id, due member, meta.
-- Returns for each message '' when it was recorded now, or the meta
-- already recorded under its id (a retried publish, or a conflict).
local function unit(keys, args)
  local done = redis.call('GET', keys[3])
  local out = {}
  for i = 1, #args, 3 do
    if redis.call('HSETNX', keys[2], args[i], args[i + 2]) == 1 then
      redis.call('ZADD', keys[1], 0, args[i + 1])
      if done and args[i + 1] <= done then
        redis.call('ZADD', keys[4], 0, args[i + 1])
      end
      out[#out + 1] = ''
    else
      out[#out + 1] = redis.call('HGET', keys[2], args[i])
    end
  end
  return out
end
