-- Record a batch of outcomes. An outcome whose token is stale, or whose task is not
-- running, is refused (0).
-- ARGV[3]: MessagePack array of {id, token, kind, late, error line|nil,
--   result|nil, retry_at|nil, result ttl|nil, follow-ups|nil}.
-- Follow-ups (a workflow step's next tasks, packed by the client) of an accepted
-- success go to the queue's outbox <B>:out (field: the task id) in this same call:
-- the client then delivers them to their queues and deletes the field; the reaper
-- delivers what a client did not (see RedisBackend._deliver).
local out = {}
local done = {}
local woke = 0
local items = cmsgpack.unpack(ARGV[3])
for n = 1, #items do
  local it = items[n]
  local id, kind = it[1], it[3]
  local k = k_task(id)
  -- Every field read costs: the common outcome (success, failure) needs four; the
  -- rest only for a late task or one that goes back to the queue.
  local f = redis.call('HMGET', k, 's', 'k', 'uk', 'wd')
  if f[1] ~= 'running' or tonumber(f[2]) ~= it[2] then
    out[#out + 1] = 0
  else
    done[#done + 1] = id
    local uk = f[3] or nil
    local wd = f[4] or nil
    local g = nil  -- priority, deadline, fairness key, attempt
    if it[4] or kind == 'retry' or kind == 'defer' or kind == 'released' then
      g = redis.call('HMGET', k, 'p', 'd', 'fk', 'a')
    end
    if it[4] then count('late:' .. g[1], 1) end
    if it[5] then add_error(k, it[5]) end
    local ttl = it[8]
    if kind == 'succeeded' then
      terminal(id, k, 'running', 'succeeded', uk, wd, ttl, it[6])
      if it[9] then redis.call('HSET', B .. ':out', id, it[9]) end
    elseif kind == 'retry' or kind == 'defer' then
      local att = tonumber(g[4])
      if kind == 'defer' then att = att - 1 end
      local e_s = NOW_S
      if it[7] then e_s = fmt(it[7]) end
      if it[7] == nil or it[7] <= NOW then woke = woke + 1 end  -- due at once: wake
      local member = schedule(id, e_s)
      redis.call('HSET', k, 's', 'retrying', 'u', NOW_S, 'e', e_s,
                 'a', string.format('%d', att), 'z', member)
      count('running', -1)
      count('retrying', 1)
    elseif kind == 'released' then
      local d = nil
      if g[2] then d = tonumber(g[2]) end
      local place = redis.call('HMGET', k, 'z', 'e')  -- back in its place
      restore_ready(place[1], tonumber(g[1]), tonumber(place[2]), d)
      redis.call('HSET', k, 's', 'queued', 'u', NOW_S,
                 'a', string.format('%d', tonumber(g[4]) - 1))
      count('running', -1)
      count('queued', 1)
      woke = woke + 1
    else
      terminal(id, k, 'running', kind, uk, wd, ttl)
    end
    out[#out + 1] = 1
  end
end
zrem_all(K_RUN, done)
flush()
wake(woke)
return out
