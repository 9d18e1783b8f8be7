-- Claim up to %(limit)s tasks in ONE statement:
--   0. unless asked otherwise, commit without waiting for the WAL flush;
--   1. lock the due scheduled / retrying rows of the requested, unpaused queues and
--      score them (they become ready now: new arrival seq, policy score or fair tag);
--   2. lock the best ready rows (partial index tasks_ready, SKIP LOCKED);
--   3. rank both in (queue order, score, seq) order;
--   4. one UPDATE leases the chosen rows and queues the promoted rows not chosen; it
--      finds them by the row address (ctid) they had when locked: a locked row cannot
--      move, and this saves a primary-key descent per row;
--   5. weighted fair queues advance their virtual time to the top claimed score.
WITH commit_mode AS MATERIALIZED (
    -- %(synchronous_commit)s 'off' (the default, Settings.claim_sync_commit): this
    -- transaction's commit does not wait for its WAL flush. A claim lost in a server
    -- crash only returns its tasks to the queue, as an expired lease would; enqueues
    -- and settles stay synchronous.
    SELECT set_config('synchronous_commit',
                      coalesce(%(synchronous_commit)s, current_setting('synchronous_commit')),
                      true) AS mode
), qs AS MATERIALIZED (
    SELECT u.name, u.ord,
           coalesce(q.kind, 'deadline') AS kind,
           coalesce(q.horizons, '{0,60,300,1800,7200}') AS horizons
      FROM commit_mode
     CROSS JOIN unnest(%(queues)s::text[]) WITH ORDINALITY AS u(name, ord)
      LEFT JOIN @schema@.queues q ON q.name = u.name
     WHERE NOT coalesce(q.paused, false)
), due AS MATERIALIZED (
    SELECT d.*, qs.ord, qs.kind, qs.horizons
      FROM qs
     CROSS JOIN LATERAL (
            SELECT t.id, t.ctid AS row_at, t.priority, t.eligible_at, t.deadline, t.seq
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
      FROM (SELECT ARRAY(SELECT p.id FROM promoted p WHERE p.kind = 'fair'
                          ORDER BY p.new_seq) AS ids) a
     CROSS JOIN LATERAL @schema@.fair_tags(a.ids) f
     WHERE cardinality(a.ids) > 0
), candidates AS MATERIALIZED (
    SELECT p.id, p.row_at, p.ord, p.priority, true AS promoted, p.new_seq AS seq,
           coalesce(f.tag, @schema@.static_score(p.kind, p.horizons, p.priority,
                                                 p.eligible_at, p.deadline)) AS score
      FROM promoted p
      LEFT JOIN fair f ON f.task_id = p.id
    UNION ALL
    SELECT r.id, r.row_at, qs.ord, r.priority, false, r.seq, r.score
      FROM qs
     CROSS JOIN LATERAL (
            SELECT t.id, t.ctid AS row_at, t.priority, t.seq, t.score
              FROM @schema@.tasks t
             WHERE t.queue = qs.name AND t.state = 'queued'
               AND t.priority <= %(max_priority)s
             ORDER BY t.score, t.seq
             LIMIT %(limit)s
               FOR UPDATE SKIP LOCKED) r
), ranked AS MATERIALIZED (
    -- take = among the best %(limit)s eligible candidates; promoted rows are updated
    -- either way (leased, or queued with their new score)
    SELECT c.*, c.priority <= %(max_priority)s
                AND row_number() OVER (PARTITION BY c.priority <= %(max_priority)s
                                       ORDER BY c.ord, c.score, c.seq) <= %(limit)s AS take
      FROM candidates c
), leased AS (
    UPDATE @schema@.tasks t SET
        state = CASE WHEN x.take THEN 'running' ELSE 'queued' END,
        score = x.score,
        seq = x.seq,
        updated_at = %(now)s,
        attempt = t.attempt + CASE WHEN x.take THEN 1 ELSE 0 END,
        token = CASE WHEN x.take THEN nextval('@schema@.token_seq') ELSE t.token END,
        worker = CASE WHEN x.take THEN %(worker)s ELSE t.worker END,
        started_at = CASE WHEN x.take THEN %(now)s ELSE t.started_at END,
        expires_at = CASE WHEN x.take THEN %(expires_at)s ELSE t.expires_at END
      FROM ranked x
     WHERE t.ctid = x.row_at AND (x.promoted OR x.take)
    RETURNING t.id, t.task, t.queue, t.priority, t.enqueued_at, t.msg_eligible_at, t.body,
              t.deadline, t.unique_key, t.fairness_key, t.result_ttl, t.token, t.attempt,
              t.eligible_at, t.score, t.seq, x.ord, x.take AS taken
), advanced AS (
    UPDATE @schema@.queues q SET virtual_time = m.top
      FROM (SELECT l.queue, max(l.score) AS top FROM leased l WHERE l.taken
             GROUP BY l.queue) m
     WHERE q.name = m.queue AND q.kind = 'fair' AND m.top > q.virtual_time
)
SELECT l.id, l.task, l.queue, l.priority, l.enqueued_at, l.msg_eligible_at, l.body,
       l.deadline, l.unique_key, l.fairness_key, l.result_ttl, l.token, l.attempt,
       l.eligible_at
  FROM leased l
 WHERE l.taken
 ORDER BY l.ord, l.score, l.seq
