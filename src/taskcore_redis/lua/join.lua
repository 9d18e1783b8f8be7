-- Note parents of workflow joins kept in this queue (taskcore.backend.FollowUp with
-- after > 1: a chord's callback, which lives in this queue).
-- ARGV[3]: MessagePack array of {follow-up id, parent id, after, keep until}.
-- Returns per item 1 when the join is complete (the caller enqueues the follow-up),
-- else 0. The set <B>:j:<id> holds the parents: delivering one parent twice (a client
-- and the reaper) adds nothing. A complete join is kept a day, so a late repeat of a
-- delivery finds it complete again (the enqueue then dedupes by id) instead of
-- starting over.
-- An incomplete join is kept while the result of a parent it counts is: "keep until"
-- is that parent's success plus its result TTL (inf: forever), and <B>:jx (join id ->
-- the latest such time, on the backend's clock) is where reap.lua finds the joins
-- that can no longer complete (a member failed, was cancelled or dead-lettered).
local K_JX = B .. ':jx'
local out = {}
local items = cmsgpack.unpack(ARGV[3])
for n = 1, #items do
  local it = items[n]
  local k = B .. ':j:' .. it[1]
  redis.call('SADD', k, it[2])
  if redis.call('SCARD', k) >= it[3] then
    redis.call('PEXPIRE', k, '86400000')
    redis.call('ZREM', K_JX, it[1])
    out[n] = 1
  else
    local cur = redis.call('ZSCORE', K_JX, it[1])
    if not cur or tonumber(cur) < it[4] then redis.call('ZADD', K_JX, fmt(it[4]), it[1]) end
    out[n] = 0
  end
end
return out
