-- scan: what Expire has to do in one bucket (read-only).
-- KEYS: due (zset), done (string), late (zset), meta (hash) of the bucket.
-- ARGV: due bound, purge bound (members below them are due; exclusive), n.
-- Returns three flat arrays of member, meta ('' when missing), each of at
-- most n members, in order: the members of due above done that are due
-- (to settle), the members of late that are due (to settle), and the
-- members of due at or below done that are due for purging and not in
-- late (settled already).
local n = tonumber(ARGV[3])
local done = redis.call('GET', KEYS[2])
local function take(members, out)
  for _, m in ipairs(members) do
    out[#out + 1] = m
    out[#out + 1] = redis.call('HGET', KEYS[4], string.sub(m, 17)) or ''
  end
  return out
end
local from = '-'
if done then
  from = '(' .. done
end
local above = take(redis.call('ZRANGEBYLEX', KEYS[1], from, '(' .. ARGV[1], 'LIMIT', 0, n), {})
local late = take(redis.call('ZRANGEBYLEX', KEYS[3], '-', '(' .. ARGV[1], 'LIMIT', 0, n), {})
local gc = {}
if done then
  local to = '(' .. ARGV[2]
  if done < ARGV[2] then
    to = '[' .. done
  end
  local skip = redis.call('ZCARD', KEYS[3]) > 0
  local offset = 0
  while #gc < 2 * n do
    local batch = redis.call('ZRANGEBYLEX', KEYS[1], '-', to, 'LIMIT', offset, n)
    for _, m in ipairs(batch) do
      if #gc < 2 * n and not (skip and redis.call('ZSCORE', KEYS[3], m)) then
        take({m}, gc)
      end
    end
    if #batch < n then
      break
    end
    offset = offset + n
  end
end
return {above, late, gc}
