-- finish: Expire's last step in one bucket, once the cursors are settled:
-- purged messages leave the bucket, settled ones leave late, those not in
-- their log (yet) go to late, and the watermark moves up to the members
-- of due this Expire handled, but never past one it did not (recorded
-- since its scan).
-- KEYS: due (zset), done (string), late (zset), meta (hash) of the bucket.
-- ARGV: the highest member of due this Expire handled ('' for none), then
-- pairs of op ('s' settled, 'l' not in its log, 'p' purged) and member.
local known = {}
for i = 2, #ARGV, 2 do
  local m = ARGV[i + 1]
  known[m] = true
  if ARGV[i] == 'l' then
    redis.call('ZADD', KEYS[3], 0, m)
  else
    redis.call('ZREM', KEYS[3], m)
  end
  if ARGV[i] == 'p' then
    redis.call('ZREM', KEYS[1], m)
    redis.call('HDEL', KEYS[4], string.sub(m, 17))
  end
end
if ARGV[1] == '' then
  return 0
end
local done = redis.call('GET', KEYS[2])
if done and done >= ARGV[1] then
  return 0
end
local from = '-'
if done then
  from = '(' .. done
end
local upto = done
for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], from, '[' .. ARGV[1])) do
  if not known[m] then
    break
  end
  upto = m
end
if upto and upto ~= done then
  redis.call('SET', KEYS[2], upto)
end
return 0
