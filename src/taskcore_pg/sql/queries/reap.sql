-- Return up to %(batch)s tasks whose lease expired to the queue, under a new token that
-- fences the old holder out, with a LeaseExpired entry in their history. Tasks whose
-- cancellation was requested end cancelled instead.
WITH expired AS MATERIALIZED (
    SELECT t.id, t.priority, t.deadline, t.cancel_requested, t.token AS old_token, t.queue
      FROM @schema@.tasks t
     WHERE t.state = 'running' AND t.expires_at <= %(now)s
     ORDER BY t.expires_at, t.token
     LIMIT %(batch)s
       FOR UPDATE SKIP LOCKED
), ordered AS MATERIALIZED (
    SELECT e.*, CASE WHEN e.cancel_requested THEN NULL
                     ELSE nextval('@schema@.task_seq') END AS new_seq
      FROM (SELECT * FROM expired ORDER BY expired.old_token) e
), fair AS MATERIALIZED (
    SELECT f.task_id, f.tag
      FROM @schema@.fair_tags(ARRAY(SELECT o.id FROM ordered o WHERE NOT o.cancel_requested
                                     ORDER BY o.old_token)) f
), requeued AS (
    UPDATE @schema@.tasks t SET
        errors = t.errors || jsonb_build_array(jsonb_build_object(
            'attempt', t.attempt, 'type', 'LeaseExpired',
            'message', 'lease of worker ' || coalesce(t.worker, 'None')
                       || ' expired; task returned to the queue',
            'traceback', '', 'at', %(at)s::jsonb)),
        token = nextval('@schema@.token_seq'),
        worker = NULL,
        eligible_at = %(now)s,
        updated_at = %(now)s,
        state = CASE WHEN o.cancel_requested THEN 'cancelled' ELSE 'queued' END,
        finished_at = CASE WHEN o.cancel_requested THEN %(now)s ELSE t.finished_at END,
        seq = coalesce(o.new_seq, t.seq),
        score = CASE WHEN o.cancel_requested THEN t.score
                     ELSE coalesce(f.tag, @schema@.static_score(
                              coalesce(q.kind, 'deadline'),
                              coalesce(q.horizons, '{0,60,300,1800,7200}'),
                              o.priority, %(now)s, o.deadline)) END
      FROM ordered o
      LEFT JOIN @schema@.queues q ON q.name = o.queue
      LEFT JOIN fair f ON f.task_id = o.id
     WHERE t.id = o.id
    RETURNING t.id, t.queue, t.state, o.old_token
), woken AS (
    SELECT count(pg_notify(%(ready_channel)s, r.queue)) AS n
      FROM (SELECT DISTINCT r.queue FROM requeued r WHERE r.state = 'queued') r
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
