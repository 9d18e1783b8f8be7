-- Re-queue dead or failed tasks; the attempt count restarts, the history is kept.
-- ARGV[3]: MessagePack array of task ids. Returns 1/0 per id; 0 also when a live
-- task holds the dead task's unique key now.
local out = {}
local woke = 0
local ids = cmsgpack.unpack(ARGV[3])
for i = 1, #ids do
  local id = ids[i]
  local k = k_task(id)
  local f = redis.call('HMGET', k, 's', 'p', 'd', 'fk', 'uk')
  local holder = nil
  if f[5] then holder = redis.call('HGET', K_UNIQ, f[5]) end
  if (f[1] == 'dead' or f[1] == 'failed') and (not holder or holder == id) then
    redis.call('ZREM', K_PURGE, id)
    redis.call('HDEL', k, 'pa', 'f')
    local d = nil
    if f[3] then d = tonumber(f[3]) end
    local member = make_ready(id, tonumber(f[2]), NOW, d, f[4] or nil)
    redis.call('HSET', k, 's', 'queued', 'a', '0', 'e', NOW_S, 'u', NOW_S, 'z', member)
    count(f[1], -1)
    count('queued', 1)
    if f[5] then redis.call('HSET', K_UNIQ, f[5], id) end
    woke = woke + 1
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
flush()
wake(woke)
return out
