-- Cancel waiting tasks at once; flag running ones (their worker learns on its next
-- extend). ARGV[3]: MessagePack array of task ids. Returns 1/0 per id (0: unknown or terminal).
local out = {}
local ids = cmsgpack.unpack(ARGV[3])
for i = 1, #ids do
  local id = ids[i]
  local k = k_task(id)
  local f = redis.call('HMGET', k, 's', 'z', 'p', 'uk', 'wd')
  local s = f[1]
  if not s or TERMINAL[s] then
    out[#out + 1] = 0
  elseif s == 'running' then
    redis.call('HSET', k, 'c', '1')
    out[#out + 1] = 1
  else
    cancel_waiting(id, k, f)
    out[#out + 1] = 1
  end
end
flush()
return out
