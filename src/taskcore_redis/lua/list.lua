-- Find the queue's tasks matching a filter, in (enqueued_at, id) order.
-- ARGV[3] how many to find, ARGV[4] state (opt), ARGV[5] task name (opt),
-- ARGV[6] text (opt; substring of id, unique key or last error message).
-- Returns a flat list id, enqueued_at.
local need = tonumber(ARGV[3])
local state = opt(ARGV[4])
local task = opt(ARGV[5])
local text = opt(ARGV[6])
local out = {}
local found = 0
local start = 0
local CHUNK = 500
while found < need do
  local ids = redis.call('ZRANGE', K_ALL, start, start + CHUNK - 1, 'WITHSCORES')
  if #ids == 0 then break end
  for j = 1, #ids, 2 do
    local id = ids[j]
    local f = redis.call('HMGET', k_task(id), 's', 'tn', 'uk', 'E')
    local ok = f[1] and (state == nil or f[1] == state) and (task == nil or f[2] == task)
    if ok and text ~= nil then
      ok = string.find(id, text, 1, true) ~= nil
        or (f[3] and string.find(f[3], text, 1, true) ~= nil)
      if not ok and f[4] then
        local last = f[4]
        local nl = string.find(last, '\n[^\n]*$')
        if nl then last = string.sub(last, nl + 1) end
        local msg = cjson.decode(last)[3]
        ok = string.find(msg, text, 1, true) ~= nil
      end
    end
    if ok then
      out[#out + 1] = id
      out[#out + 1] = ids[j + 1]
      found = found + 1
      if found >= need then break end
    end
  end
  start = start + CHUNK
end
return out
