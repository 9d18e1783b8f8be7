-- Prelude shared by every per-queue script; the loader prepends it to each script.
--
-- Conventions: KEYS[1] is the queue's meta hash "<B>:meta" (so Redis Cluster routes
-- the call to the queue's slot); ARGV[1] is "now" from the client's clock (the
-- server's TIME is never used, so a fake clock drives tests; '+' before it: the call
-- is sent again, see AGAIN); ARGV[2] is the queue's
-- key base B = "{<prefix>:<queue>}". Every other key of the queue is derived from B,
-- so all of them share B's hash tag and live in one cluster slot.
-- A call sent again after a lost reply says so with a '+' before "now": only then can
-- its reply have been kept already (the _REPLAY wrapper and claim.lua look for it).
local NOW_S, AGAIN = ARGV[1], false
if string.byte(NOW_S) == 43 then NOW_S, AGAIN = string.sub(NOW_S, 2), true end
local NOW = tonumber(NOW_S)
local B = ARGV[2]
local K_META = KEYS[1]
local K_CNT = B .. ':n'
local K_ALL = B .. ':all'
local K_SCHED = B .. ':sched'
local K_RUN = B .. ':run'
local K_PURGE = B .. ':purge'
local K_UNIQ = B .. ':uniq'
local K_FIN = B .. ':fin'
local K_WAKE = B .. ':wake'
-- Idle workers blocked on their own hand-off list (RedisBackend.wait): member
-- "<32-hex backend id><lease seconds>|<worker>" (see waiter_home for a worker on
-- several queues), score: until when it waits.
local K_WAITERS = B .. ':hw'
-- Constants that go to redis.call as strings: Redis 7.0 formats every number
-- argument with "%.17g" (about 3 k instructions each; 7.2 and later print whole
-- numbers as integers).
local HAND_TTL_MS = '60000'
local WAKE_MAX = 16
local DONE_TTL_MS = '60000'
local REPLY_TTL_MS = '10000'
local SEQ_WIDTH = 15
-- A member of :run that keeps it a skiplist: its name is longer than Redis's
-- zset-max-listpack-value (64 bytes). Below zset-max-listpack-entries (128) members
-- Redis keeps a sorted set as a listpack, where each insert walks the list parsing
-- every score, and a claim inserts a batch of leases. Score +inf: no reap finds it
-- expired, and nothing else reads :run by range.
local RUN_PIN = '\0pin: keeps this sorted set a skiplist; as a listpack each insert walks it'

-- Ready-set key per priority, built once per call (p may be a number or a string):
-- concatenating a number formats it with sprintf on every use.
local K_READY = {}
local function k_ready(p)
  local k = K_READY[p]
  if k == nil then k = B .. ':r' .. p; K_READY[p] = k end
  return k
end
local function k_task(id) return B .. ':t:' .. id end
local function k_done(id) return B .. ':d:' .. id end
-- A waiter's registration (K_WAITERS): "<32-hex backend id><lease seconds>|<worker>",
-- or, from a worker on several queues, "@<n>@<home>" before it on each of them: <home>
-- (n bytes) is the key base of its first queue, where its hand-off list and inbox are
-- (single-node Redis: this queue's scripts push to keys of another slot). Returns
-- that base and where the rest starts.
local function waiter_home(w)
  if string.byte(w, 1) ~= 64 then return B, 1 end  -- '@'
  local at = string.find(w, '@', 2, true)
  local n = tonumber(string.sub(w, 2, at - 1))
  return string.sub(w, at + 1, at + n), at + n + 1
end
-- A waiter's hand-off list (what enqueue.lua and wake() push to it; it blocks on it).
local function k_hand(waiter)
  local home, at = waiter_home(waiter)
  return home .. ':h:' .. string.sub(waiter, at, at + 31)
end

-- Lua's tostring keeps 14 digits; %.17g round-trips every double.
local function fmt(x) return string.format('%.17g', x) end

local TERMINAL = {succeeded = true, failed = true, dead = true, cancelled = true}

-- Per-state counters, applied once per script call.
local DELTA = {}
local function count(field, d) DELTA[field] = (DELTA[field] or 0) + d end

-- Sorted-set additions, applied in bulk (one ZADD per key per 500 members).
local ZADDS = {}
local function zadd(key, score, member)
  local t = ZADDS[key]
  if t == nil then t = {}; ZADDS[key] = t end
  if type(score) == 'number' then score = fmt(score) end
  t[#t + 1] = score
  t[#t + 1] = member
end
local function flush_zadds()
  for key, t in pairs(ZADDS) do
    for i = 1, #t, 1000 do
      redis.call('ZADD', key, unpack(t, i, math.min(i + 999, #t)))
    end
  end
  ZADDS = {}
end

local function zrem_all(key, members)
  for i = 1, #members, 1000 do
    redis.call('ZREM', key, unpack(members, i, math.min(i + 999, #members)))
  end
end

-- Scheduling policy (taskcore.scheduling.SchedulingPolicy.to_dict() as JSON).
local POL = nil
local function policy()
  if POL == nil then
    local raw = redis.call('HGET', K_META, 'policy')
    if raw then POL = cjson.decode(raw) else POL = default_policy() end
  end
  return POL
end

-- Arrival sequence (tie-break for equal scores), virtual time and finish tags of
-- the weighted fair policy: read lazily, written back once by flush().
local SEQ = nil
local function next_seq()
  if SEQ == nil then SEQ = tonumber(redis.call('HGET', K_META, 'seq') or '0') end
  SEQ = SEQ + 1
  return SEQ
end
local VT = nil
local VT_DIRTY = false
local function vtime()
  if VT == nil then VT = tonumber(redis.call('HGET', K_META, 'vt') or '0') end
  return VT
end
local FIN = {}
local FIN_DIRTY = {}

-- '%015d' of seq, with the sprintf done once per 100 sequence numbers: the last two
-- digits come from a table filled on first use.
local SEQ_HI, SEQ_HI_S, SEQ_LO = -1, '', {}
local function member_of(seq, id)
  local hi = math.floor(seq / 100)
  if hi ~= SEQ_HI then SEQ_HI = hi; SEQ_HI_S = string.format('%013d', hi) end
  local lo = seq - hi * 100
  local d = SEQ_LO[lo]
  if d == nil then d = string.format('%02d', lo); SEQ_LO[lo] = d end
  return SEQ_HI_S .. d .. id
end
local function id_of(member) return string.sub(member, SEQ_WIDTH + 1) end
local function seq_of(member) return tonumber(string.sub(member, 1, SEQ_WIDTH)) end

-- The score of a ready task under the fifo, priority and deadline policies (e: its
-- ready time, e_s: the same as the string it was sent as, if at hand).
local function static_score(pol, p, e, d, e_s)
  if pol.kind == 'fifo' then return e_s or e end
  if pol.kind == 'priority' then return p * 8589934592.0 + e end
  local score = e + pol.horizons[p + 1]
  if d ~= nil and d <= score then score = d end
  return score
end

-- Score a task that just became ready and add it to its priority's ready set.
-- Same formulas as taskcore.scheduling (static_score, FairState.tag). `e_s`
-- (optional) is `e` already formatted.
local function make_ready(id, p, e, d, fk, e_s)
  local pol = policy()
  local score
  if pol.kind == 'fair' then
    local cls
    if pol.by == 'key' then cls = fk or '' else cls = 'P' .. p end
    local f = FIN[cls]
    if f == nil then f = tonumber(redis.call('ZSCORE', K_FIN, cls) or '0') end
    local w = pol.weights[cls]
    if w == nil then w = pol.default_weight end
    f = math.max(vtime(), f) + 1.0 / w
    FIN[cls] = f
    FIN_DIRTY[cls] = true
    score = f
  else
    score = static_score(pol, p, e, d, e_s)
  end
  local member = member_of(next_seq(), id)
  zadd(k_ready(p), score, member)
  return member
end

-- Put a task on the scheduled set (due at e); returns its member.
local function schedule(id, e)
  local member = member_of(next_seq(), id)
  zadd(K_SCHED, e, member)
  return member
end

-- Record a failed attempt (one JSON array per line).
local function add_error(k, err)
  local cur = redis.call('HGET', k, 'E')
  if cur then err = cur .. '\n' .. err end
  redis.call('HSET', k, 'E', err)
end

-- Move a running/waiting task into a terminal state; `result` (optional) is stored
-- in the same HSET.
local function terminal(id, k, from, to, uk, wd, ttl, result)
  count(from, -1)
  count(to, 1)
  local f = {'s', to, 'u', NOW_S, 'f', NOW_S}
  if ttl ~= nil then
    local at = NOW + ttl
    f[7] = 'pa'
    f[8] = fmt(at)
    zadd(K_PURGE, f[8], id)
  end
  if result ~= nil then
    f[#f + 1] = 'r'
    f[#f + 1] = result
  end
  redis.call('HSET', k, unpack(f))
  if uk and redis.call('HGET', K_UNIQ, uk) == id then
    redis.call('HDEL', K_UNIQ, uk)
  end
  if wd then
    local dk = k_done(id)
    for _ = 1, tonumber(wd) do redis.call('RPUSH', dk, '1') end
    redis.call('PEXPIRE', dk, DONE_TTL_MS)
    redis.call('HDEL', k, 'wd')
  end
end

-- Delete a task's record for good.
-- Cancel a task that is not running: drop its ready/scheduled member, end it.
-- f = HMGET k 's', 'z', 'p', 'uk', 'wd'.
local function cancel_waiting(id, k, f)
  local s = f[1]
  if f[2] then
    if s == 'queued' then
      redis.call('ZREM', k_ready(f[3]), f[2])
    else
      redis.call('ZREM', K_SCHED, f[2])
    end
  end
  terminal(id, k, s, 'cancelled', f[4] or nil, f[5] or nil, nil)
end

local function forget(id, k, state)
  redis.call('DEL', k)
  redis.call('ZREM', K_ALL, id)
  count(state, -1)
end

-- Wake idle workers blocked on the queue's marker list. A paused queue gets no
-- markers (pause also clears them), so a woken worker can claim without looking first.
-- A marker is the time it was pushed: a claim that a marker woke (claim.lua with an
-- inbox) takes its time as a lower bound of "now" (see there).
-- Registered waiters (K_WAITERS) get theirs in their own list, one each, and are
-- unregistered by it; the rest go to the queue's list, where unregistered waiters block.
-- NO_WAITERS: this call found no live registration already (only the call itself could
-- add one, and no script does), so wake() need not look again.
local NO_WAITERS = false
local function wake(n)
  if n > 0 and redis.call('HEXISTS', K_META, 'paused') == 0 then
    local idle = {}
    if not NO_WAITERS then
      idle = redis.call('ZRANGEBYSCORE', K_WAITERS, NOW_S, '+inf', 'LIMIT', '0', math.min(n, WAKE_MAX))
    end
    if #idle > 0 then
      for _, w in ipairs(idle) do
        local h = k_hand(w)
        redis.call('RPUSH', h, NOW_S)
        redis.call('PEXPIRE', h, HAND_TTL_MS)
      end
      redis.call('ZREM', K_WAITERS, unpack(idle))
      n = n - #idle
      if n <= 0 then return end
    end
    local args = {}
    for i = 1, math.min(n, WAKE_MAX) do args[i] = NOW_S end
    if redis.call('RPUSH', K_WAKE, unpack(args)) > WAKE_MAX then
      redis.call('LTRIM', K_WAKE, -WAKE_MAX, -1)
    end
    redis.call('PEXPIRE', K_WAKE, '5000')
  end
end

local function flush()
  flush_zadds()
  for field, d in pairs(DELTA) do
    if d ~= 0 then
      if d == 1 then d = '1' elseif d == -1 then d = '-1' end  -- most are (see HAND_TTL_MS)
      redis.call('HINCRBY', K_CNT, field, d)
    end
  end
  DELTA = {}
  if SEQ ~= nil then redis.call('HSET', K_META, 'seq', string.format('%d', SEQ)) end
  if VT_DIRTY then
    redis.call('HSET', K_META, 'vt', fmt(VT))
  end
  local fin = {}
  for cls, _ in pairs(FIN_DIRTY) do
    fin[#fin + 1] = fmt(FIN[cls])
    fin[#fin + 1] = cls
  end
  if #fin > 0 then redis.call('ZADD', K_FIN, unpack(fin)) end
  FIN_DIRTY = {}
  if VT_DIRTY then
    -- A finish tag at or below V acts exactly like no tag (max(V, F) = V): drop it
    -- so the set holds only classes with work in flight.
    redis.call('ZREMRANGEBYSCORE', K_FIN, '-inf', fmt(VT))
    VT_DIRTY = false
  end
end

-- Optional string argument: '' is absent, otherwise '=' .. value.
local function opt(s)
  if s == '' then return nil end
  return string.sub(s, 2)
end

-- Put a task that was running (lease expired, or handed back) back in its place:
-- `member` is the ready-set member it was claimed from (its arrival seq) and `e` its
-- ready time, both kept, so it is claimed before the tasks that became ready after it.
-- The static score is make_ready's formula (kept apart from make_ready so the two can
-- change separately); on a weighted fair queue the task's spent finish tag becomes the
-- queue's virtual time (the lowest tag a ready task can have; its class is not charged
-- again). Same rule as taskcore.memory.MemoryBackend._restore.
local function restore_ready(member, p, e, d)
  local pol = policy()
  local score
  if pol.kind == 'fair' then
    score = vtime()
  else
    score = static_score(pol, p, e, d)
  end
  zadd(k_ready(p), score, member)
end
