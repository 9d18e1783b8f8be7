-- Register a waiter for a task's completion. ARGV[3]: task id.
-- Returns 0 (unknown task), 1 (already terminal) or 2 (registered: the terminal
-- transition pushes one marker per waiter on the task's done list).
local k = k_task(ARGV[3])
local s = redis.call('HGET', k, 's')
if not s then return 0 end
if TERMINAL[s] then return 1 end
redis.call('HINCRBY', k, 'wd', '1')
return 2
