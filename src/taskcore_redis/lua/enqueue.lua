-- Enqueue a batch of messages into one queue.
-- ARGV[3..]: 9 per message: id, stored message, priority, eligible_at, enqueued_at,
--   deadline ('' = none), unique key (opt), fairness key (opt), task name.
--   An empty stored message means "this id names a task of another queue".
-- Returns per message: the state (a string) when it was created, else {id of the
-- task it names, its state ('' when that task is in another queue)}.
-- Same order of checks as the memory backend: the unique key first, then the id.
local out = {}
local ready = 0
for i = 3, #ARGV, 9 do
  local id = ARGV[i]
  local uk = opt(ARGV[i + 6])
  local existing = nil
  if uk then
    existing = redis.call('HGET', K_UNIQ, uk)
    if not existing then redis.call('HSET', K_UNIQ, uk, id) end
  end
  if existing then
    out[#out + 1] = {existing, redis.call('HGET', k_task(existing), 's') or ''}
  elseif ARGV[i + 1] == '' then
    out[#out + 1] = {id, ''}
  else
    local k = k_task(id)
    local state = redis.call('HGET', k, 's')
    if state then
      out[#out + 1] = {id, state}
    else
      local p = tonumber(ARGV[i + 2])
      local e_s = ARGV[i + 3]
      local e = tonumber(e_s)
      local d_s = ARGV[i + 5]
      local d = nil
      if d_s ~= '' then d = tonumber(d_s) end
      local fk = opt(ARGV[i + 7])
      local member
      if e <= NOW then
        state = 'queued'
        member = make_ready(id, p, e, d, fk)
        ready = ready + 1
      else
        state = 'scheduled'
        member = schedule(id, e)
      end
      local f = {'m', ARGV[i + 1], 'tn', ARGV[i + 8], 'p', ARGV[i + 2], 's', state,
                 'a', '0', 'k', '0', 'e', e_s, 'u', NOW_S, 'z', member}
      if d then f[#f + 1] = 'd'; f[#f + 1] = d_s end
      if uk then f[#f + 1] = 'uk'; f[#f + 1] = uk end
      if fk then f[#f + 1] = 'fk'; f[#f + 1] = fk end
      redis.call('HSET', k, unpack(f))
      count(state, 1)
      zadd(K_ALL, ARGV[i + 4], id)
      out[#out + 1] = state
    end
  end
end
flush()
wake(ready)
return out
