-- Delete up to %(batch)s tasks of a queue in the given states (never running ones).
-- Waiting tasks deleted this way end as if cancelled: their result waiters wake.
WITH gone AS (
    DELETE FROM @schema@.tasks t
     WHERE t.id IN (SELECT x.id FROM @schema@.tasks x
                     WHERE x.queue = %(queue)s AND x.state = ANY(%(states)s::text[])
                       AND x.state <> 'running'
                     LIMIT %(batch)s
                       FOR UPDATE)
    RETURNING t.id, t.state
), notified AS (
    SELECT count(pg_notify(%(done_channel)s, c.ids)) AS n
      FROM (SELECT string_agg(d.id, ',') AS ids
              FROM (SELECT g.id, (row_number() OVER ()) / 200 AS chunk FROM gone g
                     WHERE g.state NOT IN ('succeeded', 'failed', 'dead', 'cancelled')) d
             GROUP BY d.chunk) c
)
SELECT count(*), (SELECT n FROM notified) FROM gone
