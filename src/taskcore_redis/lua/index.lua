-- Global: record which queue holds each task id. KEYS[1] id -> queue hash.
-- ARGV[1]: MessagePack array of {id, queue}. Returns a flat list position, queue for
-- every id that was already indexed (same queue: re-enqueue; another queue: id conflict).
local out = {}
local items = cmsgpack.unpack(ARGV[1])
for i = 1, #items do
  local id = items[i][1]
  if redis.call('HSETNX', KEYS[1], id, items[i][2]) == 0 then
    out[#out + 1] = i
    out[#out + 1] = redis.call('HGET', KEYS[1], id)
  end
end
return out
