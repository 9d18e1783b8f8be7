-- Enqueue a batch of messages into one queue.
-- ARGV[3]: MessagePack array of {id, stored message, priority, eligible_at,
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
local IDX = KEYS[3]
local QNAME = ARGV[4]
local PRIO = {[0] = '0', '1', '2', '3', '4'}  -- a priority as a field, unformatted
local out = {}
local n_out = 0
local ready = 0
local items = cmsgpack.unpack(ARGV[3])
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
    local member
    if e <= NOW then
      state = 'queued'
      member = make_ready(id, p, e, d, fk, e_s)
      ready = ready + 1
    else
      state = 'scheduled'
      member = schedule(id, e_s)
    end
    -- No attempt or token field until the first claim: absent means 0.
    if d or uk or fk then
      local f = {'m', it[2], 'tn', it[9], 'p', PRIO[p] or p, 's', state, 'e', e_s, 'u', NOW_S, 'z', member}
      if d then f[15] = 'd'; f[16] = fmt(d) end
      if uk then f[#f + 1] = 'uk'; f[#f + 1] = uk end
      if fk then f[#f + 1] = 'fk'; f[#f + 1] = fk end
      redis.call('HSET', k, unpack(f))
    else  -- the same without building a table
      redis.call('HSET', k, 'm', it[2], 'tn', it[9], 'p', PRIO[p] or p, 's', state, 'e', e_s,
        'u', NOW_S, 'z', member)
    end
    count(state, 1)
    zadd(K_ALL, it[5] or e_s, id)
    n_out = n_out + 1
    out[n_out] = state
  end
end
flush()
wake(ready)
return out
