-- Note parents of workflow joins kept in this queue (taskcore.backend.FollowUp with
-- after > 1: a chord's callback, which lives in this queue).
-- ARGV[3]: MessagePack array of {follow-up id, parent id, after}.
-- Returns per item 1 when the join is complete (the caller enqueues the follow-up),
-- else 0. The set <B>:j:<id> holds the parents: delivering one parent twice (a client
-- and the reaper) adds nothing. A complete join is kept a day, so a late repeat of a
-- delivery finds it complete again (the enqueue then dedupes by id) instead of
-- starting over.
local out = {}
local items = cmsgpack.unpack(ARGV[3])
for n = 1, #items do
  local it = items[n]
  local k = B .. ':j:' .. it[1]
  redis.call('SADD', k, it[2])
  if redis.call('SCARD', k) >= it[3] then
    redis.call('PEXPIRE', k, 86400000)
    out[n] = 1
  else
    out[n] = 0
  end
end
return out
