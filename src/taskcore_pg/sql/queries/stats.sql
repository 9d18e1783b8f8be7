-- Counts per (queue, state), ready depth per (queue, priority), late counts. Each
-- branch names its states literally, so it reads the partial index that holds them
-- (there is no index on (queue, state): see migration 0003). Queued rows are counted
-- by priority only; the caller sums them. The backend never stores 'waiting' tasks.
SELECT 'state' AS kind, t.queue, t.state AS key, count(*) AS n
  FROM @schema@.tasks t
 WHERE t.queue = ANY(%(queues)s::text[]) AND t.state IN ('scheduled', 'retrying')
 GROUP BY t.queue, t.state
UNION ALL
SELECT 'state', t.queue, t.state, count(*)
  FROM @schema@.tasks t
 WHERE t.queue = ANY(%(queues)s::text[]) AND t.state = 'running'
 GROUP BY t.queue, t.state
UNION ALL
SELECT 'state', t.queue, t.state, count(*)
  FROM @schema@.tasks t
 WHERE %(finished)s::boolean AND t.queue = ANY(%(queues)s::text[])
   AND t.state IN ('succeeded', 'failed', 'dead', 'cancelled')
 GROUP BY t.queue, t.state
UNION ALL
SELECT 'depth', t.queue, t.priority::text, count(*)
  FROM @schema@.tasks t WHERE t.queue = ANY(%(queues)s::text[]) AND t.state = 'queued'
 GROUP BY t.queue, t.priority
UNION ALL
SELECT 'late', c.queue, c.priority::text, c.n
  FROM @schema@.late_counts c WHERE c.queue = ANY(%(queues)s::text[])
