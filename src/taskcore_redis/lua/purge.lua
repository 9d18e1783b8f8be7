-- Delete the queue's tasks in the given states (never running ones); waiting tasks
-- are cancelled first. Scans ARGV[4] tasks from rank ARGV[3] in arrival order.
-- ARGV[5..]: states. Returns {deleted ids, scanned}.
local start = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local wanted = {}
for i = 5, #ARGV do wanted[ARGV[i]] = true end
local ids = redis.call('ZRANGE', K_ALL, start, start + n - 1)
local deleted = {}
for _, id in ipairs(ids) do
  local k = k_task(id)
  local f = redis.call('HMGET', k, 's', 'z', 'p', 'uk', 'wd')
  local s = f[1]
  if s and wanted[s] and s ~= 'running' then
    if not TERMINAL[s] then
      cancel_waiting(id, k, f)
      s = 'cancelled'
    end
    redis.call('ZREM', K_PURGE, id)
    forget(id, k, s)
    deleted[#deleted + 1] = id
  end
end
flush()
return {deleted, #ids}
