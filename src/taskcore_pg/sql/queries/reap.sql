-- Return up to %(batch)s tasks whose lease expired to the queue, under a new token that
-- fences the old holder out, with a LeaseExpired entry in their history. Tasks whose
-- cancellation was requested end cancelled instead. A requeued task keeps its place:
-- its ready time, score and arrival seq stay (so it is claimed before the tasks that
-- became ready after it); on a weighted fair queue its spent finish tag becomes the
-- queue's virtual time (the lowest tag a ready task can have).
WITH expired AS MATERIALIZED (
    SELECT t.id, t.cancel_requested, t.token AS old_token, t.queue
      FROM @schema@.tasks t
     WHERE t.state = 'running' AND t.expires_at <= %(now)s
     ORDER BY t.expires_at, t.token
     LIMIT %(batch)s
       FOR UPDATE SKIP LOCKED
), requeued AS (
    UPDATE @schema@.tasks t SET
        errors = t.errors || jsonb_build_array(jsonb_build_object(
            'attempt', t.attempt, 'type', 'LeaseExpired',
            'message', 'lease of worker ' || coalesce(t.worker, 'None')
                       || ' expired; task returned to the queue',
            'traceback', '', 'at', %(at)s::jsonb)),
        token = nextval('@schema@.token_seq'),
        worker = NULL,
        updated_at = %(now)s,
        state = CASE WHEN o.cancel_requested THEN 'cancelled' ELSE 'queued' END,
        finished_at = CASE WHEN o.cancel_requested THEN %(now)s ELSE t.finished_at END,
        score = CASE WHEN q.kind = 'fair' AND NOT o.cancel_requested THEN q.virtual_time
                     ELSE t.score END
      FROM expired o
      LEFT JOIN @schema@.queues q ON q.name = o.queue
     WHERE t.id = o.id
    RETURNING t.id, t.queue, t.state, o.old_token
), woken AS (
    -- a registered idle waiter each (wake_waiters, migration 0009)
    SELECT coalesce(max(w.n), 0) AS n
      FROM (SELECT @schema@.wake_waiters(%(ready_channel)s, array_agg(r.queue), %(now)s) AS n
              FROM requeued r WHERE r.state = 'queued'
            HAVING count(*) > 0) w
), finished AS (
    SELECT count(pg_notify(%(done_channel)s, c.ids)) AS n
      FROM (SELECT string_agg(d.id, ',') AS ids
              FROM (SELECT r.id, (row_number() OVER ()) / 200 AS chunk FROM requeued r
                     WHERE r.state = 'cancelled') d
             GROUP BY d.chunk) c
)
SELECT coalesce(array_agg(r.id ORDER BY r.old_token) FILTER (WHERE r.state = 'queued'), '{}'),
       count(*) AS touched,
       (SELECT n FROM woken) + (SELECT n FROM finished) AS notified
  FROM requeued r
