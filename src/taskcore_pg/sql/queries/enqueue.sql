-- Store a batch of tasks in one statement. Unique keys and duplicate ids are settled by
-- the arbiter indexes (ON CONFLICT DO NOTHING), never by a check-then-insert; a task
-- that was not created is answered with the live task that holds its key (or its id).
-- Ready tasks of fair queues come back with needs_tag: the caller tags them in the
-- same transaction (fair_tags), so no NULL score is ever committed.
WITH input AS (
    SELECT i.*, min(i.ord) OVER (PARTITION BY i.id) AS first_ord
      FROM unnest(%(ids)s::text[], %(tasks)s::text[], %(queues)s::text[],
                  %(priorities)s::smallint[], %(enqueued_at)s::float8[],
                  %(eligible_at)s::float8[], %(bodies)s::bytea[], %(deadlines)s::float8[],
                  %(unique_keys)s::text[], %(fairness_keys)s::text[], %(result_ttls)s::float8[])
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
     ORDER BY i.ord
    ON CONFLICT DO NOTHING
    RETURNING t.id, t.queue, t.unique_key, t.state, (t.state = 'queued' AND t.score IS NULL) AS needs_tag
), woken AS (
    SELECT count(pg_notify(%(ready_channel)s, r.queue)) AS n
      FROM (SELECT DISTINCT ins.queue FROM ins WHERE ins.state = 'queued') r
)
SELECT i.ord,
       (mine.id IS NOT NULL) AS created,
       coalesce(mine.id, key_new.id, key_old.id, id_new.id, id_old.id) AS id,
       coalesce(mine.state, key_new.state, key_old.state, id_new.state, id_old.state) AS state,
       coalesce(mine.needs_tag, false) AS needs_tag,
       woken.n
  FROM input i
 CROSS JOIN woken
  LEFT JOIN ins mine ON mine.id = i.id AND i.ord = i.first_ord
  LEFT JOIN ins key_new ON mine.id IS NULL AND key_new.queue = i.queue
                        AND key_new.unique_key = i.unique_key
  LEFT JOIN LATERAL (
        SELECT t.id, t.state FROM @schema@.tasks t
         WHERE mine.id IS NULL AND t.queue = i.queue AND t.unique_key = i.unique_key
           AND t.unique_key IS NOT NULL
           AND t.state NOT IN ('succeeded', 'failed', 'dead', 'cancelled')
         LIMIT 1) key_old ON true
  LEFT JOIN ins id_new ON mine.id IS NULL AND id_new.id = i.id
  LEFT JOIN @schema@.tasks id_old ON mine.id IS NULL AND id_old.id = i.id
 ORDER BY i.ord
