-- Promote due scheduled/retrying tasks, then lease up to `limit` ready tasks in
-- policy order (lowest score first, ties by arrival sequence).
-- ARGV[3] limit, ARGV[4] worker, ARGV[5] max priority, ARGV[6] lease seconds.
-- Returns {leases, next due, now}: one {stored message, token, attempt, ready time}
-- per lease; next due is '' unless the ready sets ran dry (fewer than `limit` leases,
-- every priority allowed): then the due time of the first scheduled task, if any,
-- and the wake-up markers are dropped (they were for work that is gone now), so the
-- caller's next wait() need not look first (see RedisBackend.wait). `now` is the
-- time the claim used (its leases expire `lease seconds` after it).
-- KEYS[2] (optional) keeps {now, id, token, attempt, ...} so that a repeated call with
-- the same key (the client lost the reply) returns the same leases instead of new ones.
-- KEYS[3] (optional) is the caller's inbox: the call was sent in one round trip right
-- behind a BLMOVE of a wake-up marker into it (RedisBackend.wait), so it runs as soon
-- as a marker wakes the caller, or when the BLMOVE times out. No marker in the inbox:
-- nothing is done and `now` is ''. Otherwise ARGV[1] was read when the caller started
-- to block, maybe a second ago, so the claim takes the latest of it, the markers'
-- times and the ready times of the tasks it leases as its "now": a lease never starts
-- before its task was enqueued, and never ends before `lease seconds` from its start.
local REPLY_KEY = KEYS[2]
if REPLY_KEY then
  local kept = redis.call('GET', REPLY_KEY)
  if kept then
    local t = cmsgpack.unpack(kept)
    local out = {}
    for j = 2, #t, 3 do
      local f = redis.call('HMGET', k_task(t[j]), 'm', 'e')
      out[#out + 1] = {f[1], t[j + 1], t[j + 2], f[2]}
    end
    return {out, '', t[1] or ''}
  end
end
local function keep(compact)
  if REPLY_KEY then
    redis.call('SET', REPLY_KEY, cmsgpack.pack(compact), 'PX', REPLY_TTL_MS)
  end
end
local INBOX = KEYS[3]
if INBOX then
  local markers = redis.call('LRANGE', INBOX, 0, -1)
  if #markers == 0 then keep({''}); return {{}, '', ''} end
  redis.call('DEL', INBOX)
  for _, m in ipairs(markers) do
    local t = tonumber(m)
    if t ~= nil and t > NOW then NOW = t; NOW_S = m end
  end
end
if redis.call('HEXISTS', K_META, 'paused') == 1 then keep({NOW_S}); return {{}, '', NOW_S} end
local limit = tonumber(ARGV[3])
local worker = ARGV[4]
local maxp = math.min(tonumber(ARGV[5]), 4)
local lease = tonumber(ARGV[6])

local due = redis.call('ZRANGEBYSCORE', K_SCHED, '-inf', NOW_S)
if #due > 0 then
  for _, member in ipairs(due) do
    local id = id_of(member)
    local k = k_task(id)
    local f = redis.call('HMGET', k, 's', 'p', 'e', 'd', 'fk')
    if f[1] == 'scheduled' or f[1] == 'retrying' then
      local d = nil
      if f[4] then d = tonumber(f[4]) end
      local fk = nil
      if f[5] then fk = f[5] end
      local m = make_ready(id, tonumber(f[2]), tonumber(f[3]), d, fk)
      redis.call('HSET', k, 's', 'queued', 'u', NOW_S, 'z', m)
      count(f[1], -1)
      count('queued', 1)
    end
  end
  redis.call('ZREMRANGEBYSCORE', K_SCHED, '-inf', NOW_S)
  flush_zadds()
end

-- k-way merge of the priority sets' heads.
local heads = {}
for p = 0, maxp do
  local r = redis.call('ZRANGE', k_ready(p), 0, limit - 1, 'WITHSCORES')
  if #r > 0 then
    heads[#heads + 1] = {p = p, r = r, i = 1, n = 0,
                         s = tonumber(r[2]), q = seq_of(r[1])}
  end
end
local picked = {}  -- {member, score as returned by ZRANGE}
if #heads == 1 then  -- one priority has work (common): its order is the order
  local h = heads[1]
  for i = 1, #h.r, 2 do picked[#picked + 1] = {h.r[i], h.r[i + 1]} end
  h.n = #picked
end
while #heads > 1 and #picked < limit do
  local best = nil
  for _, h in ipairs(heads) do
    if h.s ~= nil and (best == nil or h.s < best.s or (h.s == best.s and h.q < best.q)) then
      best = h
    end
  end
  if best == nil then break end
  picked[#picked + 1] = {best.r[best.i], best.r[best.i + 1]}
  best.i = best.i + 2
  best.n = best.n + 1
  if best.i <= #best.r then
    best.s = tonumber(best.r[best.i + 1])
    best.q = seq_of(best.r[best.i])
  else
    best.s = nil
  end
end
for _, h in ipairs(heads) do
  if h.n > 0 then redis.call('ZREMRANGEBYRANK', k_ready(h.p), 0, h.n - 1) end
end

local fair = #picked > 0 and policy().kind == 'fair'  -- no policy read when idle
local rows = {}
for i, pk in ipairs(picked) do
  local id = id_of(pk[1])
  if fair and tonumber(pk[2]) > vtime() then
    VT = tonumber(pk[2])
    VT_DIRTY = true
  end
  local f = redis.call('HMGET', k_task(id), 'm', 'k', 'a', 'e')
  if f[1] then
    local e = tonumber(f[4])
    if e > NOW then NOW = e; NOW_S = f[4] end  -- made ready by a clock ahead of ours
    rows[#rows + 1] = {id, f}
  end
end
local exp_s = fmt(NOW + lease)
local out = {}
local compact = {NOW_S}
for _, row in ipairs(rows) do
  local id, f = row[1], row[2]
  -- A task never claimed has no token or attempt fields yet (0). Whole numbers
  -- below 1e14 go to Redis exactly, without string.format.
  local tok = tonumber(f[2] or 0) + 1
  local att = tonumber(f[3] or 0) + 1
  redis.call('HSET', k_task(id), 's', 'running', 'k', tok, 'a', att, 'w', worker,
             'st', NOW_S, 'u', NOW_S, 'cs', next_seq())
  zadd(K_RUN, exp_s, id)
  count('queued', -1)
  count('running', 1)
  out[#out + 1] = {f[1], tok, att, f[4]}
  compact[#compact + 1] = id
  compact[#compact + 1] = tok
  compact[#compact + 1] = att
end
flush()
keep(compact)
local next_due = ''
if #picked < limit and maxp >= 4 then
  redis.call('DEL', K_WAKE)
  local first = redis.call('ZRANGE', K_SCHED, 0, 0, 'WITHSCORES')
  if #first > 0 then next_due = first[2] end
end
return {out, next_due, NOW_S}
