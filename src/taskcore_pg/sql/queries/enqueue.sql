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
), queued AS (
    SELECT ins.queue, count(*) AS n FROM ins WHERE ins.state = 'queued' GROUP BY ins.queue
), taken AS (
    -- as many registered idle waiters of these queues as tasks were queued (migration
    -- 0009), each notified on its own channel; <schema>.ready only if none was taken
    DELETE FROM @schema@.ready_waiters w
     WHERE w.id IN (SELECT r.id FROM @schema@.ready_waiters r
                     WHERE r.queues && ARRAY(SELECT queued.queue FROM queued)
                       AND r.expires_at > %(now)s
                     LIMIT (SELECT coalesce(sum(queued.n), 0) FROM queued)
                     FOR UPDATE SKIP LOCKED)
    RETURNING w.channel, (SELECT min(queued.queue) FROM queued
                           WHERE queued.queue = ANY(w.queues)) AS queue
), woken AS (
    SELECT count(pg_notify(taken.channel, taken.queue)) AS n FROM taken
    UNION ALL
    SELECT count(pg_notify(%(ready_channel)s, queued.queue))
      FROM queued WHERE NOT EXISTS (SELECT 1 FROM taken)
)
SELECT ins.id, ins.state, ins.needs_tag, (SELECT sum(woken.n) FROM woken) FROM ins
