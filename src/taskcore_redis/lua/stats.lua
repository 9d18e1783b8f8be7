-- A consistent snapshot of the queue's counters.
-- Returns {paused (0/1), policy JSON or '', counters (flat field/value list),
--          ready depth of P0..P4}.
local meta = redis.call('HMGET', K_META, 'paused', 'policy')
local depth = {}
for p = 0, 4 do depth[p + 1] = redis.call('ZCARD', k_ready(p)) end
local paused = 0
if meta[1] then paused = 1 end
return {paused, meta[2] or '', redis.call('HGETALL', K_CNT), depth}
