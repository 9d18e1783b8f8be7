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
-- the same key (the client lost the reply; it sends AGAIN) returns the same leases
-- instead of new ones.
-- KEYS[3], KEYS[4] and ARGV[7] (optional; ARGV[7] '' without them): the caller's inbox,
-- its hand-off list and its registration as an idle waiter (RedisBackend.wait: it registers, then blocks on a
-- BLMOVE from the hand-off list into the inbox). The claim unregisters it and empties
-- both lists: a task enqueue.lua handed to the caller (leased to it already) is
-- returned first, if its lease is still the caller's, and counts against `limit`; a
-- wake-up marker's time (a client's clock, maybe ahead of ours) is a lower bound of
-- "now": a lease never starts before its task was enqueued. A worker on several queues
-- has one inbox and list (its first queue's) and a registration on each: its claim on
-- any of them may find a task another of them handed it, and returns it too.
local REPLY_KEY = KEYS[2]
if REPLY_KEY and AGAIN then
  local kept = redis.call('GET', REPLY_KEY)
  if kept then
    local t = cmsgpack.unpack(kept)
    local out = {}
    for j = 2, #t, 3 do
      local id = t[j]  -- {key base, id}: handed by another queue (see with_handed)
      local k = type(id) == 'table' and id[1] .. ':t:' .. id[2] or k_task(id)
      local f = redis.call('HMGET', k, 'm', 'e')
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
local handed = {}  -- {id, {stored message, token, attempt, ready time}}
if INBOX then
  redis.call('ZREM', K_WAITERS, ARGV[7])
  -- and the registrations of workers that died blocked, a minute after they ended
  redis.call('ZREMRANGEBYSCORE', K_WAITERS, '-inf', fmt(NOW - 60))
  local items = redis.call('LRANGE', INBOX, '0', '-1')
  for _, x in ipairs(redis.call('LRANGE', KEYS[4], '0', '-1')) do items[#items + 1] = x end
  if #items > 0 then redis.call('DEL', INBOX, KEYS[4]) end
  for _, m in ipairs(items) do
    local kind = string.byte(m, 1)
    if kind == 104 or kind == 72 then  -- 'h' or 'H': handed by enqueue.lua (see there)
      local base, at = B, 2
      if kind == 72 then  -- by another queue of a worker on several: its key base first
        local bar = string.find(m, '|', 2, true)
        local n = tonumber(string.sub(m, 2, bar - 1))
        base, at = string.sub(m, bar + 1, bar + n), bar + n + 1
      end
      local p = {}
      for i = 1, 6 do
        local bar = string.find(m, '|', at, true)
        p[i] = string.sub(m, at, bar - 1)
        at = bar + 1
      end
      local id = string.sub(m, at, at + tonumber(p[6]) - 1)
      local f = redis.call('HMGET', base .. ':t:' .. id, 's', 'k')
      if f[1] == 'running' and f[2] == p[1] then
        handed[#handed + 1] = {id, {string.sub(m, at + tonumber(p[6])), p[1], p[2], p[3]}, base}
      end
    else
      local t = tonumber(m)
      if t ~= nil and t > NOW then NOW = t; NOW_S = m end
    end
  end
end
-- The handed leases in the reply, dated from this claim's `now` as its own are.
local function with_handed(out, compact)
  local exp_s = fmt(NOW + tonumber(ARGV[6]))
  for _, h in ipairs(handed) do
    zadd(h[3] .. ':run', exp_s, h[1])
    out[#out + 1] = h[2]
    compact[#compact + 1] = h[3] == B and h[1] or {h[3], h[1]}
    compact[#compact + 1] = h[2][2]
    compact[#compact + 1] = h[2][3]
  end
  return out, compact
end
-- ARGV[8...] (optional): the reply keys of the claims of the same caller's other queues
-- that ran before this one in its round trip (single-node Redis: other slots); what
-- they leased counts against `limit`, so one round trip claims over several queues.
-- If they took it all, this queue is left as it is (no due task promoted), as a claim
-- that stopped at them would leave it.
local before = 0
for i = 8, #ARGV do
  local kept = redis.call('GET', ARGV[i])
  if kept then before = before + (#cmsgpack.unpack(kept) - 1) / 3 end
end
local limit = math.max(tonumber(ARGV[3]) - #handed - before, 0)
if (before > 0 and limit == 0) or redis.call('HEXISTS', K_META, 'paused') == 1 then
  local out, compact = with_handed({}, {NOW_S})
  flush_zadds()
  keep(compact)
  return {out, '', NOW_S}
end
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
for p = 0, (limit > 0 and maxp or -1) do
  local r = redis.call('ZRANGE', k_ready(p), '0', limit - 1, 'WITHSCORES')
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
  if h.n > 0 then redis.call('ZREMRANGEBYRANK', k_ready(h.p), '0', h.n - 1) end
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
if #rows > 0 then redis.call('ZADD', K_RUN, 'NX', '+inf', RUN_PIN) end
local out, compact = with_handed({}, {NOW_S})
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
  local first = redis.call('ZRANGE', K_SCHED, '0', '0', 'WITHSCORES')
  if #first > 0 then next_due = first[2] end
end
return {out, next_due, NOW_S}
