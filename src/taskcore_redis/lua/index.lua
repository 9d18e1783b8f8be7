-- Global: record which queue holds each task id. KEYS[1] id -> queue hash.
-- ARGV[1]: MessagePack array of {id, queue}. Returns a flat list position, queue for every id that was
-- already indexed (same queue: re-enqueue; another queue: id conflict).
local out = {}
local fresh = {}
local items = cmsgpack.unpack(ARGV[1])
for i = 1, #items do
  local id, q = items[i][1], items[i][2]
  local existing = redis.call('HGET', KEYS[1], id)
  if existing then
    out[#out + 1] = i
    out[#out + 1] = existing
  else
    fresh[#fresh + 1] = id
    fresh[#fresh + 1] = q
  end
end
for i = 1, #fresh, 1000 do
  redis.call('HSET', KEYS[1], unpack(fresh, i, math.min(i + 999, #fresh)))
end
return out
