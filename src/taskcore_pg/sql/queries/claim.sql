-- Claim up to %(limit)s tasks in ONE statement:
--   1. lock the due scheduled / retrying rows of the requested, unpaused queues and
--      score them (they become ready now: new arrival seq, policy score or fair tag);
--   2. lock the best ready rows (partial index tasks_ready, SKIP LOCKED);
--   3. choose the best of both in (queue order, score, seq) order;
--   4. one UPDATE leases the chosen rows and queues the promoted rows not chosen;
--   5. weighted fair queues advance their virtual time to the top claimed score.
WITH qs AS MATERIALIZED (
    SELECT u.name, u.ord,
           coalesce(q.kind, 'deadline') AS kind,
           coalesce(q.horizons, '{0,60,300,1800,7200}') AS horizons
      FROM unnest(%(queues)s::text[]) WITH ORDINALITY AS u(name, ord)
      LEFT JOIN @schema@.queues q ON q.name = u.name
     WHERE NOT coalesce(q.paused, false)
), due AS MATERIALIZED (
    SELECT d.*, qs.ord, qs.kind, qs.horizons
      FROM qs
     CROSS JOIN LATERAL (
            SELECT t.id, t.priority, t.eligible_at, t.deadline, t.seq
              FROM @schema@.tasks t
             WHERE t.queue = qs.name AND t.state IN ('scheduled', 'retrying')
               AND t.eligible_at <= %(now)s
             ORDER BY t.eligible_at, t.seq
             LIMIT %(promote_limit)s
               FOR UPDATE SKIP LOCKED) d
), promoted AS MATERIALIZED (
    SELECT d.*, nextval('@schema@.task_seq') AS new_seq
      FROM (SELECT * FROM due ORDER BY due.ord, due.eligible_at, due.seq) d
), fair AS MATERIALIZED (
    SELECT f.task_id, f.tag
      FROM @schema@.fair_tags(ARRAY(SELECT p.id FROM promoted p WHERE p.kind = 'fair'
                                     ORDER BY p.new_seq)) f
), candidates AS MATERIALIZED (
    SELECT p.id, p.ord, p.priority, true AS promoted, p.new_seq AS seq,
           coalesce(f.tag, @schema@.static_score(p.kind, p.horizons, p.priority,
                                                 p.eligible_at, p.deadline)) AS score
      FROM promoted p
      LEFT JOIN fair f ON f.task_id = p.id
    UNION ALL
    SELECT r.id, qs.ord, r.priority, false, r.seq, r.score
      FROM qs
     CROSS JOIN LATERAL (
            SELECT t.id, t.priority, t.seq, t.score
              FROM @schema@.tasks t
             WHERE t.queue = qs.name AND t.state = 'queued'
               AND t.priority <= %(max_priority)s
             ORDER BY t.score, t.seq
             LIMIT %(limit)s
               FOR UPDATE SKIP LOCKED) r
), chosen AS MATERIALIZED (
    SELECT c.id FROM candidates c
     WHERE c.priority <= %(max_priority)s
     ORDER BY c.ord, c.score, c.seq
     LIMIT %(limit)s
), leased AS (
    UPDATE @schema@.tasks t SET
        state = CASE WHEN ch.id IS NULL THEN 'queued' ELSE 'running' END,
        score = c.score,
        seq = c.seq,
        updated_at = %(now)s,
        attempt = t.attempt + CASE WHEN ch.id IS NULL THEN 0 ELSE 1 END,
        token = CASE WHEN ch.id IS NULL THEN t.token
                     ELSE nextval('@schema@.token_seq') END,
        worker = CASE WHEN ch.id IS NULL THEN t.worker ELSE %(worker)s END,
        started_at = CASE WHEN ch.id IS NULL THEN t.started_at ELSE %(now)s END,
        expires_at = CASE WHEN ch.id IS NULL THEN t.expires_at ELSE %(expires_at)s END
      FROM candidates c
      LEFT JOIN chosen ch ON ch.id = c.id
     WHERE t.id = c.id AND (c.promoted OR ch.id IS NOT NULL)
    RETURNING t.id, t.task, t.queue, t.priority, t.enqueued_at, t.msg_eligible_at, t.body,
              t.deadline, t.unique_key, t.fairness_key, t.result_ttl, t.token, t.attempt,
              t.score, t.seq, c.ord, (ch.id IS NOT NULL) AS taken
), advanced AS (
    UPDATE @schema@.queues q SET virtual_time = m.top
      FROM (SELECT l.queue, max(l.score) AS top FROM leased l WHERE l.taken
             GROUP BY l.queue) m
     WHERE q.name = m.queue AND q.kind = 'fair' AND m.top > q.virtual_time
)
SELECT l.id, l.task, l.queue, l.priority, l.enqueued_at, l.msg_eligible_at, l.body,
       l.deadline, l.unique_key, l.fairness_key, l.result_ttl, l.token, l.attempt
  FROM leased l
 WHERE l.taken
 ORDER BY l.ord, l.score, l.seq
