-- Whether any requested, unpaused queue has ready work or due scheduled work.
SELECT EXISTS (
    SELECT 1
      FROM unnest(%(queues)s::text[]) AS u(name)
      LEFT JOIN @schema@.queues q ON q.name = u.name
     WHERE NOT coalesce(q.paused, false)
       AND (EXISTS (SELECT 1 FROM @schema@.tasks t
                     WHERE t.queue = u.name AND t.state = 'queued')
            OR EXISTS (SELECT 1 FROM @schema@.tasks t
                        WHERE t.queue = u.name AND t.state IN ('scheduled', 'retrying')
                          AND t.eligible_at <= %(now)s)))
