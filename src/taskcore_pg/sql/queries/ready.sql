-- Whether any requested, unpaused queue has ready work or due scheduled work. Each
-- probe asks for the first row in its partial index's order (tasks_ready, tasks_due),
-- so it is one index descent however many finished rows the table holds (an EXISTS
-- let the planner pick a sequential scan that read every finished row first).
SELECT EXISTS (
    SELECT 1
      FROM unnest(%(queues)s::text[]) AS u(name)
      LEFT JOIN @schema@.queues q ON q.name = u.name
     WHERE NOT coalesce(q.paused, false)
       AND ((SELECT t.id FROM @schema@.tasks t
              WHERE t.queue = u.name AND t.state = 'queued'
              ORDER BY t.score, t.seq LIMIT 1) IS NOT NULL
            OR (SELECT t.id FROM @schema@.tasks t
                 WHERE t.queue = u.name AND t.state IN ('scheduled', 'retrying')
                   AND t.eligible_at <= %(now)s
                 ORDER BY t.eligible_at, t.seq LIMIT 1) IS NOT NULL))
