-- Global: token bucket. KEYS[1] bucket hash.
-- ARGV: now, rate (tokens/s), capacity, n, key expiry (ms).
-- Returns '0' if granted, else the seconds to wait (as a string).
local now = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local f = redis.call('HMGET', KEYS[1], 't', 'l')
local tokens, last = cap, now
if f[1] then
  tokens = tonumber(f[1])
  last = tonumber(f[2])
end
tokens = math.min(cap, tokens + (now - last) * rate)
local wait = '0'
if tokens >= n then
  tokens = tokens - n
else
  wait = string.format('%.17g', (n - tokens) / rate)
end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'l', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return wait
