-- Global: set a small value, optionally expiring at ARGV[2] (client clock) with a
-- Redis expiry of ARGV[3] ms as the backstop. KEYS[1] value hash.
-- ARGV[4] '' sets it whatever is stored; otherwise it is a compare-and-set, stored
-- only if the value held at client time ARGV[5] (one whose expiry has passed counts
-- as none) is none (ARGV[4] '0') or ARGV[6] (ARGV[4] '1'). Returns 1 if stored, else 0.
if ARGV[4] ~= '' then
  local held = redis.call('HMGET', KEYS[1], 'v', 'x')
  local value, expiry = held[1], held[2]
  if value and expiry and tonumber(expiry) <= tonumber(ARGV[5]) then value = false end
  if ARGV[4] == '0' then
    if value then return 0 end
  elseif value ~= ARGV[6] then
    return 0
  end
end
redis.call('DEL', KEYS[1])
if ARGV[2] == '' then
  redis.call('HSET', KEYS[1], 'v', ARGV[1])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'x', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
