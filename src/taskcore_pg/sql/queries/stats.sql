-- Counts per (queue, state), ready depth per (queue, priority), late counts.
SELECT 'state' AS kind, t.queue, t.state AS key, count(*) AS n
  FROM @schema@.tasks t WHERE t.queue = ANY(%(queues)s::text[])
 GROUP BY t.queue, t.state
UNION ALL
SELECT 'depth', t.queue, t.priority::text, count(*)
  FROM @schema@.tasks t WHERE t.queue = ANY(%(queues)s::text[]) AND t.state = 'queued'
 GROUP BY t.queue, t.priority
UNION ALL
SELECT 'late', c.queue, c.priority::text, c.n
  FROM @schema@.late_counts c WHERE c.queue = ANY(%(queues)s::text[])
