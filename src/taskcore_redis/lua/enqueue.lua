-- Enqueue a batch of messages into one queue.
-- ARGV[3]: MessagePack array of {id, stored message (or, when long, the position of the
--   argument that holds it: ARGV[5] on), priority, eligible_at,
--   enqueued_at|nil (nil: the same as eligible_at), deadline|nil, unique key|nil,
--   fairness key|nil, task name, eligible_at as a number}; the two times come as
--   strings (Python's repr round-trips; formatting a double in Lua costs more than
--   the rest of a field), and eligible_at as a number too (parsing the string would
--   cost a strtod). Every byte sent costs the server ~20 instructions (Lua hashes
--   each string it makes, the argument and each unpacked field).
--   An empty stored message means "this id names a task of another queue".
-- KEYS[3] (optional): the id index ({P}:idx, another cluster slot: single-node Redis
--   only, see RedisBackend.enqueue) and ARGV[4] this queue's name: the script
--   indexes each id itself (one round trip instead of index.lua first), treats an id
--   indexed to another queue as above, and unindexes an id it did not create a task
--   for (deduplicated by its unique key). An id this call indexed names no task yet
--   (a task's index entry is written before it and removed after it), so its record
--   is not looked up.
-- Returns per message: the state (a string) when it was created, else {id of the
-- task it names, its state ('' when that task is in another queue)}.
-- Same order of checks as the memory backend: the id first, then the unique key.
-- One message that is ready now, into a queue with an idle worker registered for it
-- (RedisBackend.wait), nothing else queued or due, not paused and not weighted fair:
-- that task is the one the worker's claim would take, so it is leased to the worker
-- here (token 1, attempt 1, as claim.lua would) and pushed to its hand-off list:
-- "h<token>|<attempt>|<ready time>|<now>|<next due or ''>|<#id>|<id><stored message>".
-- The worker's blocking BLMOVE returns it, with no claim on the way.
local function waiter_for(n_items)
  if n_items ~= 1 then return nil end
  -- The one registered until the latest (if it has expired, so have all the others),
  -- taken off the set at once (no ZREM later) and put back if it gets nothing: an
  -- expired one too, which claim.lua drops after a minute (clocks may differ).
  local top, w
  repeat
    top = redis.call('ZPOPMAX', K_WAITERS)
    w = top[1]
    if w == nil then NO_WAITERS = true; return nil end
    if tonumber(top[2]) < NOW then
      NO_WAITERS = true
      redis.call('ZADD', K_WAITERS, top[2], w)
      return nil
    end
    -- A worker on several queues stays registered on the others when one of them
    -- hands it a task or wakes it: something in its list or inbox says it is busy
    -- (its next wait registers again). That registration is dropped.
    local home, at = waiter_home(w)
    local busy = at > 1 and redis.call('EXISTS', k_hand(w),
      home .. ':in:' .. string.sub(w, at, at + 31)) > 0
  until not busy
  -- policy() and next_seq()'s read in one
  local meta = redis.call('HMGET', K_META, 'paused', 'policy', 'seq')
  if POL == nil then POL = meta[2] and cjson.decode(meta[2]) or default_policy() end
  if SEQ == nil then SEQ = tonumber(meta[3] or '0') end  -- both paths take a number next
  if not (meta[1] or POL.kind == 'fair' or tonumber(redis.call('HGET', K_CNT, 'queued') or '0') ~= 0) then
    local first = redis.call('ZRANGE', K_SCHED, '0', '0', 'WITHSCORES')
    if #first == 0 or tonumber(first[2]) > NOW then return w, first[2] or '' end
  end
  -- paused, weighted fair, or work queued or due (the claim takes it first): wait on
  redis.call('ZADD', K_WAITERS, top[2], w)
  return nil
end

local function hand_off(w, due, id, it, f)
  local home, at = waiter_home(w)
  local bar = string.find(w, '|', at + 32, true)
  local lease, worker = tonumber(string.sub(w, at + 32, bar - 1)), string.sub(w, bar + 1)
  f[#f + 1] = 'k'; f[#f + 1] = '1'
  f[#f + 1] = 'a'; f[#f + 1] = '1'
  f[#f + 1] = 'w'; f[#f + 1] = worker
  f[#f + 1] = 'st'; f[#f + 1] = NOW_S
  f[#f + 1] = 'cs'; f[#f + 1] = next_seq()
  redis.call('HSET', k_task(id), unpack(f))
  zadd(K_RUN, NOW + lease, id)
  count('running', 1)
  local h = k_hand(w)
  -- (for a worker on several queues: "H<#B>|<B>" first, this queue's key base B, which
  -- a claim of another of its queues that finds the item in the inbox needs)
  local head = 'h1|1|'
  if at > 1 then head = 'H' .. #B .. '|' .. B .. '1|1|' end
  redis.call('RPUSH', h, head .. it[4] .. '|' .. NOW_S .. '|' .. due .. '|' .. #id .. '|' .. id .. it[2])
  redis.call('PEXPIRE', h, HAND_TTL_MS)
end

local IDX = KEYS[3]
local QNAME = ARGV[4]  -- '' without KEYS[3]
local PRIO = {[0] = '0', '1', '2', '3', '4'}  -- a priority as a field, unformatted
local out = {}
local n_out = 0
local ready = 0
local items = cmsgpack.unpack(ARGV[3])
-- A long stored message comes as an argument of its own (ARGV[5] on), its item holding
-- the argument's position: Redis 7 hashes every byte of a string that enters a script,
-- and inside the packed items it would enter twice.
if #ARGV > 4 then
  for n = 1, #items do
    local m = items[n][2]
    if type(m) == 'number' then items[n][2] = ARGV[m] end
  end
end
for n = 1, #items do
  local it = items[n]
  local id, uk = it[1], it[7]
  local k = k_task(id)
  local state = nil
  local indexed = false  -- this call indexed the id (KEYS[3])
  if IDX and it[2] ~= '' then
    if redis.call('HSETNX', IDX, id, QNAME) == 1 then
      indexed = true
    elseif redis.call('HGET', IDX, id) ~= QNAME then
      it[2] = ''  -- the id names a task of another queue
    end
  end
  if it[2] == '' then
    n_out = n_out + 1
    out[n_out] = {id, ''}
  elseif not indexed then
    state = redis.call('HGET', k, 's')
    if state then n_out = n_out + 1; out[n_out] = {id, state} end
  end
  local existing = nil
  if it[2] ~= '' and not state and uk then
    existing = redis.call('HGET', K_UNIQ, uk)
    if existing then
      n_out = n_out + 1
      out[n_out] = {existing, redis.call('HGET', k_task(existing), 's') or ''}
      if indexed then redis.call('HDEL', IDX, id) end
    else
      redis.call('HSET', K_UNIQ, uk, id)
    end
  end
  if it[2] ~= '' and not state and not existing then
    local p, e_s, d, fk = it[3], it[4], it[6], it[8]
    local e = it[10] or tonumber(e_s)
    local member, w, due
    if e <= NOW then
      state = 'queued'
      w, due = waiter_for(#items)
      if w then
        member = member_of(next_seq(), id)  -- its place, kept for a release or reap
      else
        member = make_ready(id, p, e, d, fk, e_s)
        ready = ready + 1
      end
    else
      state = 'scheduled'
      member = schedule(id, e_s)
    end
    -- No attempt or token field until the first claim: absent means 0.
    if w then
      local f = {'m', it[2], 'tn', it[9], 'p', PRIO[p] or p, 's', 'running', 'e', e_s, 'u', NOW_S, 'z', member}
      if d then f[#f + 1] = 'd'; f[#f + 1] = fmt(d) end
      if uk then f[#f + 1] = 'uk'; f[#f + 1] = uk end
      if fk then f[#f + 1] = 'fk'; f[#f + 1] = fk end
      hand_off(w, due, id, it, f)
    elseif d or uk or fk then
      local f = {'m', it[2], 'tn', it[9], 'p', PRIO[p] or p, 's', state, 'e', e_s, 'u', NOW_S, 'z', member}
      if d then f[15] = 'd'; f[16] = fmt(d) end
      if uk then f[#f + 1] = 'uk'; f[#f + 1] = uk end
      if fk then f[#f + 1] = 'fk'; f[#f + 1] = fk end
      redis.call('HSET', k, unpack(f))
    else  -- the same without building a table
      redis.call('HSET', k, 'm', it[2], 'tn', it[9], 'p', PRIO[p] or p, 's', state, 'e', e_s,
        'u', NOW_S, 'z', member)
    end
    if not w then count(state, 1) end
    zadd(K_ALL, it[5] or e_s, id)
    n_out = n_out + 1
    out[n_out] = state
  end
end
flush()
wake(ready)
return out
