-- Delete up to %(batch)s tasks of a queue in the given states (never running ones).
-- Waiting tasks deleted this way end as if cancelled: their result waiters wake.
-- One branch per partial index: the states named literally and the index's order, so
-- the planner reads that index (not the whole table); a branch whose states were not
-- asked for is never run.
WITH gone AS (
    DELETE FROM @schema@.tasks t
     WHERE t.id IN (
            (SELECT x.id FROM @schema@.tasks x
              WHERE x.queue = %(queue)s AND x.state = 'queued'
                AND 'queued' = ANY(%(states)s::text[])
              ORDER BY x.score, x.seq
              LIMIT %(batch)s)
            UNION ALL
            (SELECT x.id FROM @schema@.tasks x
              WHERE x.queue = %(queue)s AND x.state IN ('scheduled', 'retrying')
                AND x.state = ANY(%(states)s::text[])
                AND %(states)s::text[] && '{scheduled,retrying}'
              ORDER BY x.eligible_at, x.seq
              LIMIT %(batch)s)
            UNION ALL
            (SELECT x.id FROM @schema@.tasks x
              WHERE x.queue = %(queue)s
                AND x.state IN ('succeeded', 'failed', 'dead', 'cancelled')
                AND x.state = ANY(%(states)s::text[])
                AND %(states)s::text[] && '{succeeded,failed,dead,cancelled}'
              ORDER BY x.finished_at
              LIMIT %(batch)s)
            UNION ALL
            (SELECT x.id FROM @schema@.tasks x
              WHERE x.queue = %(queue)s AND x.state = 'waiting'
                AND 'waiting' = ANY(%(states)s::text[])
              LIMIT %(batch)s)
            LIMIT %(batch)s)
       -- re-checked on the newest row version if a concurrent change got there first
       AND t.queue = %(queue)s AND t.state = ANY(%(states)s::text[]) AND t.state <> 'running'
    RETURNING t.id, t.state
), notified AS (
    SELECT count(pg_notify(%(done_channel)s, c.ids)) AS n
      FROM (SELECT string_agg(d.id, ',') AS ids
              FROM (SELECT g.id, (row_number() OVER ()) / 200 AS chunk FROM gone g
                     WHERE g.state NOT IN ('succeeded', 'failed', 'dead', 'cancelled')) d
             GROUP BY d.chunk) c
)
SELECT count(*), (SELECT n FROM notified) FROM gone
