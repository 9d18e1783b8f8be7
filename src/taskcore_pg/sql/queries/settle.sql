-- Record a batch of outcomes in one statement. Only rows still running under the
-- outcome's token are touched (fencing); the rest are refused. Released tasks go back
-- to their place (ready time, score and arrival seq kept; on a weighted fair queue the
-- spent finish tag becomes the queue's virtual time); terminal ones wake result waiters
-- (if any process waits: done_waiters).
WITH input AS (
    SELECT * FROM unnest(%(ids)b::text[], %(tokens)b::bigint[], %(kinds)b::text[],
                         %(results)b::bytea[], %(errors)b::jsonb[], %(retry_at)b::float8[],
                         %(ttls)b::float8[], %(late)b::boolean[])
           WITH ORDINALITY AS i(id, token, kind, result, error, retry_at, ttl, late, ord)
), locked AS MATERIALIZED (
    SELECT i.*, t.queue, t.priority
      FROM input i
      JOIN @schema@.tasks t ON t.id = i.id
     WHERE t.state = 'running' AND t.token = i.token
     ORDER BY i.ord
       FOR UPDATE OF t
), prepared AS MATERIALIZED (
    -- tasks going to be retried draw their new arrival seq in outcome order
    SELECT l.*, CASE WHEN l.kind IN ('retry', 'defer')
                     THEN nextval('@schema@.task_seq') END AS new_seq
      FROM (SELECT * FROM locked ORDER BY locked.ord) l
), settled AS (
    UPDATE @schema@.tasks t SET
        state = CASE l.kind WHEN 'retry' THEN 'retrying' WHEN 'defer' THEN 'retrying'
                            WHEN 'released' THEN 'queued' ELSE l.kind END,
        attempt = t.attempt - CASE WHEN l.kind IN ('defer', 'released') THEN 1 ELSE 0 END,
        result = CASE WHEN l.kind = 'succeeded' THEN l.result ELSE t.result END,
        errors = CASE WHEN l.error IS NULL THEN t.errors
                      ELSE t.errors || jsonb_build_array(l.error) END,
        eligible_at = CASE WHEN l.kind IN ('retry', 'defer') THEN coalesce(l.retry_at, %(now)s)
                           ELSE t.eligible_at END,
        seq = coalesce(l.new_seq, t.seq),
        score = CASE WHEN l.kind = 'released' AND q.kind = 'fair' THEN q.virtual_time
                     ELSE t.score END,
        worker = NULL,
        updated_at = %(now)s,
        finished_at = CASE WHEN l.kind IN ('succeeded', 'failed', 'dead', 'cancelled')
                           THEN %(now)s ELSE t.finished_at END,
        purge_at = CASE WHEN l.kind IN ('succeeded', 'failed', 'dead', 'cancelled')
                             AND l.ttl IS NOT NULL
                        THEN %(now)s + l.ttl ELSE t.purge_at END
      FROM prepared l
      LEFT JOIN @schema@.queues q ON q.name = l.queue
     WHERE t.id = l.id
    RETURNING t.id, t.queue, t.state, l.ord
), late AS (
    INSERT INTO @schema@.late_counts AS c (queue, priority, n)
    SELECT l.queue, l.priority, count(*) FROM locked l WHERE l.late
     GROUP BY l.queue, l.priority
     ORDER BY 1, 2
    ON CONFLICT (queue, priority) DO UPDATE SET n = c.n + EXCLUDED.n
), woken AS (
    -- released tasks: a registered idle waiter each (wake_waiters, migration 0009)
    SELECT coalesce(max(w.n), 0) AS n
      FROM (SELECT @schema@.wake_waiters(%(ready_channel)s, array_agg(s.queue), %(now)s) AS n
              FROM settled s WHERE s.state = 'queued'
            HAVING count(*) > 0) w
), finished AS (
    -- only while some process waits for results (see settle_final.sql)
    SELECT count(pg_notify(%(done_channel)s, c.ids)) AS n
      FROM (SELECT string_agg(d.id, ',') AS ids
              FROM (SELECT s.id, (row_number() OVER ()) / 200 AS chunk FROM settled s
                     WHERE s.state IN ('succeeded', 'failed', 'dead', 'cancelled')) d
             GROUP BY d.chunk) c
     WHERE @schema@.done_wanted()
)
SELECT coalesce(array_agg(s.ord), '{}') AS accepted,
       (SELECT n FROM woken) + (SELECT n FROM finished) AS notified
  FROM settled s
