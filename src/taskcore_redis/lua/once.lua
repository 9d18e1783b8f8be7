-- Global: true (1) the first time KEYS[1] is seen within its ttl, by the client's
-- clock. ARGV: now, ttl, key expiry (ms; Redis drops the key once it is stale).
local now = tonumber(ARGV[1])
local until_ = redis.call('GET', KEYS[1])
if until_ and tonumber(until_) > now then return 0 end
redis.call('SET', KEYS[1], string.format('%.17g', now + tonumber(ARGV[2])), 'PX', ARGV[3])
return 1
