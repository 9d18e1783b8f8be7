-- Return tasks whose lease expired to the queue (in claim order; a new token fences
-- the old holder out; a task whose cancellation was requested ends cancelled; a
-- requeued task keeps its place, see restore_ready), and
-- forget finished records past their TTL, and incomplete workflow joins past theirs
-- (<B>:jx, see join.lua). At most ARGV[3] of each per call.
-- Returns {requeued ids, forgotten ids, more (0/1), outbox}: outbox is the flat
-- field/value list of <B>:out, follow-ups that settles stored and no client has
-- delivered yet (delivery is idempotent, so one in flight may come back here too).
local limit = tonumber(ARGV[3])
local requeued = {}
local forgotten = {}

local expired = redis.call('ZRANGEBYSCORE', K_RUN, '-inf', NOW_S, 'LIMIT', '0', limit)
if #expired > 0 then
  local items = {}
  for _, id in ipairs(expired) do
    local f = redis.call('HMGET', k_task(id), 's', 'cs', 'a', 'w', 'c', 'p', 'd', 'fk', 'uk', 'wd', 'e', 'z')
    if f[1] == 'running' then items[#items + 1] = {id = id, cs = tonumber(f[2]), f = f} end
  end
  table.sort(items, function(a, b) return a.cs < b.cs end)
  zrem_all(K_RUN, expired)
  for _, it in ipairs(items) do
    local id, f = it.id, it.f
    local k = k_task(id)
    add_error(k, '[' .. f[3] .. ',"LeaseExpired",'
      .. cjson.encode('lease of worker ' .. (f[4] or 'None')
        .. ' expired; task returned to the queue')
      .. ',"",' .. NOW_S .. ']')
    redis.call('HINCRBY', k, 'k', '1')
    if f[5] then
      terminal(id, k, 'running', 'cancelled', f[9] or nil, f[10] or nil, nil)
    else
      local d = nil
      if f[7] then d = tonumber(f[7]) end
      restore_ready(f[12], tonumber(f[6]), tonumber(f[11]), d)
      redis.call('HSET', k, 's', 'queued', 'u', NOW_S)
      count('running', -1)
      count('queued', 1)
      requeued[#requeued + 1] = id
    end
  end
end
-- Nothing running: the set starts over with its pin (RUN_PIN), because a hash table
-- whose members were deleted keeps its largest size until later commands have rehashed
-- it (a queue that had 5,000 tasks running kept about 8 kB).
if redis.call('ZCARD', K_RUN) == 1 and redis.call('ZSCORE', K_RUN, RUN_PIN) then
  redis.call('DEL', K_RUN)
  redis.call('ZADD', K_RUN, '+inf', RUN_PIN)
end

local due = redis.call('ZRANGEBYSCORE', K_PURGE, '-inf', NOW_S, 'LIMIT', '0', limit)
for _, id in ipairs(due) do
  local k = k_task(id)
  local f = redis.call('HMGET', k, 's', 'pa')
  if f[1] and f[2] and tonumber(f[2]) <= NOW then
    forget(id, k, f[1])
    forgotten[#forgotten + 1] = id
  end
end
zrem_all(K_PURGE, due)

local K_JX = B .. ':jx'
local stale = redis.call('ZRANGEBYSCORE', K_JX, '-inf', NOW_S, 'LIMIT', '0', limit)
for _, id in ipairs(stale) do redis.call('DEL', B .. ':j:' .. id) end
zrem_all(K_JX, stale)
flush()
wake(#requeued)
local more = 0
if #expired >= limit or #due >= limit or #stale >= limit then more = 1 end
return {requeued, forgotten, more, redis.call('HGETALL', B .. ':out')}
