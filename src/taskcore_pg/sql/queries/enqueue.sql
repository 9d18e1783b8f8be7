-- Store a batch of tasks in one statement. Two variants (the backend fills the markers
-- conflict and stored):
--
-- * arbiter: conflict = ON CONFLICT DO NOTHING, stored = true. Unique keys and
--   duplicate ids are settled by the arbiter indexes, never by a check-then-insert.
--   Only the rows created come back; the caller answers the others with
--   enqueue_lookup.sql in the same transaction (a later statement, so it also sees
--   holders committed meanwhile). Ready tasks of fair queues come back with needs_tag:
--   the caller tags them in the same transaction (enqueue_fair.sql), so no NULL score
--   is ever committed.
-- * plain: no ON CONFLICT (a speculative insertion costs an index probe per arbiter
--   index and a WAL record per row), for batches without unique keys, run as a
--   statement of its own (autocommit: one round trip, no BEGIN / COMMIT). A duplicate
--   id fails the whole statement with a unique violation and the caller runs the
--   arbiter variant instead; tasks of fair queues (stored filters them out) are
--   left to the arbiter variant, which tags them in its transaction.
WITH input AS (
    SELECT *
      FROM unnest(%(ids)b::text[], %(tasks)b::text[], %(queues)b::text[],
                  %(priorities)b::smallint[], %(enqueued_at)b::float8[],
                  %(eligible_at)b::float8[], %(bodies)b::bytea[], %(deadlines)b::float8[],
                  %(unique_keys)b::text[], %(fairness_keys)b::text[], %(result_ttls)b::float8[])
           WITH ORDINALITY AS i(id, task, queue, priority, enqueued_at, eligible_at, body,
                                deadline, unique_key, fairness_key, result_ttl, ord)
), new_queues AS (
    INSERT INTO @schema@.queues (name)
    SELECT DISTINCT input.queue FROM input ORDER BY 1
    ON CONFLICT DO NOTHING
), ins AS (
    INSERT INTO @schema@.tasks AS t
        (id, task, queue, priority, state, score, enqueued_at, msg_eligible_at, eligible_at,
         updated_at, deadline, unique_key, fairness_key, result_ttl, body)
    SELECT i.id, i.task, i.queue, i.priority,
           CASE WHEN i.eligible_at <= %(now)s THEN 'queued' ELSE 'scheduled' END,
           CASE WHEN i.eligible_at > %(now)s OR q.kind = 'fair' THEN NULL
                ELSE @schema@.static_score(coalesce(q.kind, 'deadline'),
                                           coalesce(q.horizons, '{0,60,300,1800,7200}'),
                                           i.priority, i.eligible_at, i.deadline)
           END,
           i.enqueued_at, i.eligible_at, i.eligible_at, %(now)s, i.deadline, i.unique_key,
           i.fairness_key, i.result_ttl, i.body
      FROM input i
      LEFT JOIN @schema@.queues q ON q.name = i.queue
     WHERE @stored@
     ORDER BY i.ord
    @conflict@
    RETURNING t.id, t.queue, t.state, (t.state = 'queued' AND t.score IS NULL) AS needs_tag
), woken AS (
    -- one registered idle waiter per task queued, each notified on its own channel
    -- (wake_waiters, migration 0009), while any is registered; else <schema>.ready
    SELECT CASE WHEN EXISTS (SELECT 1 FROM @schema@.ready_waiters)
                THEN @schema@.wake_waiters(%(ready_channel)s, array_agg(ins.queue), %(now)s)
                ELSE (SELECT count(pg_notify(%(ready_channel)s, r.queue))
                        FROM (SELECT DISTINCT i.queue FROM ins i WHERE i.state = 'queued') r)
           END AS n
      FROM ins
     WHERE ins.state = 'queued'
    HAVING count(*) > 0
)
SELECT ins.id, ins.state, ins.needs_tag, (SELECT woken.n FROM woken) FROM ins
