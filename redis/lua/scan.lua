-- scan: what Expire has to do in one bucket (read-only).
-- KEYS: due (zset), gc (zset), meta (hash) of the bucket.
-- ARGV: due bound, gc bound (members below them are due; exclusive), n.
-- Returns two flat arrays of member, meta ('' when missing): the first n
-- due members and the first n members of gc due for purging.
local n = tonumber(ARGV[3])
local function take(key, bound)
  local out = {}
  for _, m in ipairs(redis.call('ZRANGEBYLEX', key, '-', '(' .. bound, 'LIMIT', 0, n)) do
    out[#out + 1] = m
    out[#out + 1] = redis.call('HGET', KEYS[3], string.sub(m, 17)) or ''
  end
  return out
end
return {take(KEYS[1], ARGV[1]), take(KEYS[2], ARGV[2])}
