-- Re-queue dead or failed tasks by hand; the attempt history is kept. A task whose
-- unique key is now held by another live task is refused (the index allows one).
WITH input AS (
    SELECT * FROM unnest(%(ids)s::text[]) WITH ORDINALITY AS i(id, ord)
), locked AS MATERIALIZED (
    SELECT i.ord, t.id, t.queue, t.priority, t.deadline
      FROM input i
      JOIN @schema@.tasks t ON t.id = i.id
     WHERE t.state IN ('dead', 'failed')
       AND NOT EXISTS (SELECT 1 FROM @schema@.tasks o
                        WHERE t.unique_key IS NOT NULL AND o.queue = t.queue
                          AND o.unique_key = t.unique_key
                          AND o.state NOT IN ('succeeded', 'failed', 'dead', 'cancelled'))
     ORDER BY i.ord
       FOR UPDATE OF t
), ordered AS MATERIALIZED (
    SELECT l.*, nextval('@schema@.task_seq') AS new_seq
      FROM (SELECT * FROM locked ORDER BY locked.ord) l
), fair AS MATERIALIZED (
    SELECT f.task_id, f.tag
      FROM @schema@.fair_tags(ARRAY(SELECT o.id FROM ordered o ORDER BY o.ord)) f
), requeued AS (
    UPDATE @schema@.tasks t SET
        state = 'queued',
        attempt = 0,
        purge_at = NULL,
        finished_at = NULL,
        eligible_at = %(now)s,
        updated_at = %(now)s,
        seq = o.new_seq,
        score = coalesce(f.tag, @schema@.static_score(
                    coalesce(q.kind, 'deadline'),
                    coalesce(q.horizons, '{0,60,300,1800,7200}'),
                    o.priority, %(now)s, o.deadline))
      FROM ordered o
      LEFT JOIN @schema@.queues q ON q.name = o.queue
      LEFT JOIN fair f ON f.task_id = o.id
     WHERE t.id = o.id
    RETURNING o.ord, t.queue
), woken AS (
    -- a registered idle waiter each (wake_waiters, migration 0009)
    SELECT coalesce(max(w.n), 0) AS n
      FROM (SELECT @schema@.wake_waiters(%(ready_channel)s, array_agg(r.queue), %(now)s) AS n
              FROM requeued r
            HAVING count(*) > 0) w
)
SELECT coalesce(array_agg(r.ord), '{}'), (SELECT n FROM woken) FROM requeued r
