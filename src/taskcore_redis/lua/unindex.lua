-- Global: drop task ids from the id index (KEYS[1]). ARGV[1], ARGV[2]: the index's pin
-- and its value (taskcore_redis._keys.INDEX_PIN, which keeps the hash a hash table);
-- ARGV[3..]: the ids. Once only the pin is left, the hash starts over: a hash table
-- whose fields were deleted keeps its largest size until later commands have rehashed
-- it smaller (an index that held 100,000 ids kept about 1 MB), while before the pin an
-- index that emptied went with its last id.
redis.call('HDEL', KEYS[1], unpack(ARGV, 3))
local n = redis.call('HLEN', KEYS[1])
if n == 0 or (n == 1 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1) then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return n
