-- Record a batch of outcomes. An outcome whose token is stale, or whose task is not
-- running, is refused (0).
-- ARGV[3..]: 8 per outcome: id, token, kind, late ('1'/''), error line (''), result
--   (opt), retry_at (''), result ttl ('').
local out = {}
local done = {}
local woke = 0
for i = 3, #ARGV, 8 do
  local id = ARGV[i]
  local kind = ARGV[i + 2]
  local k = k_task(id)
  local f = redis.call('HMGET', k, 's', 'k', 'p', 'uk', 'wd', 'd', 'fk', 'a')
  if f[1] ~= 'running' or f[2] ~= ARGV[i + 1] then
    out[#out + 1] = 0
  else
    done[#done + 1] = id
    if ARGV[i + 3] ~= '' then count('late:' .. f[3], 1) end
    if ARGV[i + 4] ~= '' then add_error(k, ARGV[i + 4]) end
    local ttl = nil
    if ARGV[i + 7] ~= '' then ttl = tonumber(ARGV[i + 7]) end
    local uk = f[4] or nil
    local wd = f[5] or nil
    if kind == 'succeeded' then
      local res = opt(ARGV[i + 5])
      if res then redis.call('HSET', k, 'r', res) end
      terminal(id, k, 'running', 'succeeded', uk, wd, ttl)
    elseif kind == 'retry' or kind == 'defer' then
      local att = tonumber(f[8])
      if kind == 'defer' then att = att - 1 end
      local e_s = ARGV[i + 6]
      if e_s == '' then e_s = NOW_S end
      local member = schedule(id, e_s)
      redis.call('HSET', k, 's', 'retrying', 'u', NOW_S, 'e', e_s,
                 'a', string.format('%d', att), 'z', member)
      redis.call('HDEL', k, 'w')
      count('running', -1)
      count('retrying', 1)
    elseif kind == 'released' then
      local d = nil
      if f[6] then d = tonumber(f[6]) end
      local member = make_ready(id, tonumber(f[3]), NOW, d, f[7] or nil)
      redis.call('HSET', k, 's', 'queued', 'u', NOW_S, 'e', NOW_S,
                 'a', string.format('%d', tonumber(f[8]) - 1), 'z', member)
      redis.call('HDEL', k, 'w')
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
