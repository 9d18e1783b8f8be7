INSERT INTO @schema@.runtimes AS r (task, n, total)
SELECT s.task, count(*), sum(s.seconds)
  FROM unnest(%(tasks)s::text[], %(seconds)s::float8[]) AS s(task, seconds)
 GROUP BY s.task
 ORDER BY s.task
ON CONFLICT (task) DO UPDATE SET n = r.n + EXCLUDED.n, total = r.total + EXCLUDED.total
