-- Global: set a small value, optionally expiring at ARGV[2] (client clock) with a
-- Redis expiry of ARGV[3] ms as the backstop. KEYS[1] value hash.
redis.call('DEL', KEYS[1])
if ARGV[2] == '' then
  redis.call('HSET', KEYS[1], 'v', ARGV[1])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'x', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
