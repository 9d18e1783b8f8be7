-- Journal: append records to one stream. KEYS[1] records (zset: at -> member),
-- KEYS[2] first record's time per key (zset), KEYS[3] sequence counter. ARGV[1] the
-- prefix of the per-key zsets (same hash tag), then (at, key or '', blob) triples.
-- A member is the sequence number (16 hex digits: records with the same `at` sort in
-- the order they were appended) followed by the client's blob.
local n = (#ARGV - 1) / 3
local seq = redis.call('INCRBY', KEYS[3], n) - n
for i = 0, n - 1 do
  local at, key, blob = ARGV[2 + 3 * i], ARGV[3 + 3 * i], ARGV[4 + 3 * i]
  seq = seq + 1
  local member = string.format('%016x', seq) .. blob
  redis.call('ZADD', KEYS[1], at, member)
  if key ~= '' then
    redis.call('ZADD', ARGV[1] .. key, at, member)
    redis.call('ZADD', KEYS[2], 'LT', at, key)
  end
end
return n
