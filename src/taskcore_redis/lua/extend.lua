-- Push back the expiry of leases. ARGV[3] new expiry; ARGV[4]: MessagePack array of
-- {id, token}.
-- Returns 'ok', 'lost' or 'cancel' per lease.
local exp_s = ARGV[3]
local out = {}
local items = cmsgpack.unpack(ARGV[4])
for n = 1, #items do
  local id = items[n][1]
  local k = k_task(id)
  local f = redis.call('HMGET', k, 's', 'k', 'c')
  if f[1] == 'running' and tonumber(f[2]) == items[n][2] then
    zadd(K_RUN, exp_s, id)
    if f[3] then out[#out + 1] = 'cancel' else out[#out + 1] = 'ok' end
  else
    out[#out + 1] = 'lost'
  end
end
flush()
return out
