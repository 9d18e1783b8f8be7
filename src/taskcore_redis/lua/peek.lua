-- Is work ready (or due) in this queue? Returns {1, ''} if so, else {0, due time of
-- the next scheduled task or ''}. A paused queue never has work.
if redis.call('HEXISTS', K_META, 'paused') == 1 then return {0, ''} end
for p = 0, 4 do
  if redis.call('ZCARD', k_ready(p)) > 0 then return {1, ''} end
end
local first = redis.call('ZRANGE', K_SCHED, '0', '0', 'WITHSCORES')
if #first > 0 then
  if tonumber(first[2]) <= NOW then return {1, ''} end
  return {0, first[2]}
end
return {0, ''}
