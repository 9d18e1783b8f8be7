-- Journal retention: remove one stream's records earlier than ARGV[1] (a record at
-- exactly that time stays). KEYS[1] records, KEYS[2] first record's time per key.
-- ARGV[2] the prefix of the per-key zsets, ARGV[3] at most this many keys are trimmed
-- per call (the caller calls again while a call trims that many: no long script).
-- Returns {records removed, keys trimmed}.
local before = '(' .. ARGV[1]
local removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', before)
local keys = redis.call('ZRANGE', KEYS[2], '-inf', before, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[3]))
for _, key in ipairs(keys) do
  local k = ARGV[2] .. key
  redis.call('ZREMRANGEBYSCORE', k, '-inf', before)
  local first = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('ZREM', KEYS[2], key)
  else
    redis.call('ZADD', KEYS[2], first[2], key)
  end
end
return {removed, #keys}
