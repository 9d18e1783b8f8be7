-- Retention: delete up to %(batch)s tasks that finished (terminal) before %(before)s.
DELETE FROM @schema@.tasks t
 WHERE t.id IN (SELECT x.id FROM @schema@.tasks x
                 WHERE x.state IN ('succeeded', 'failed', 'dead', 'cancelled')
                   AND x.finished_at < %(before)s
                 ORDER BY x.finished_at
                 LIMIT %(batch)s
                   FOR UPDATE SKIP LOCKED)
