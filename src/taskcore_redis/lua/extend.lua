-- Push back the expiry of leases. ARGV[3] new expiry; ARGV[4..]: pairs id, token.
-- Returns 'ok', 'lost' or 'cancel' per lease.
local exp_s = ARGV[3]
local out = {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local k = k_task(id)
  local f = redis.call('HMGET', k, 's', 'k', 'c')
  if f[1] == 'running' and f[2] == ARGV[i + 1] then
    redis.call('HSET', k, 'x', exp_s)
    zadd(K_RUN, exp_s, id)
    if f[3] then out[#out + 1] = 'cancel' else out[#out + 1] = 'ok' end
  else
    out[#out + 1] = 'lost'
  end
end
flush()
return out
