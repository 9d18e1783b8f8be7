-- Answer the tasks enqueue.sql did not create: the task with the same id, else the live
-- task holding the same unique key of the queue (the memory backend's order: the id
-- first, then the unique key).
SELECT i.ord, t.id, t.state
  FROM unnest(%(ids)s::text[], %(queues)s::text[], %(unique_keys)s::text[])
       WITH ORDINALITY AS i(id, queue, unique_key, ord)
 CROSS JOIN LATERAL (
        SELECT x.id, x.state, 0 AS pref FROM @schema@.tasks x WHERE x.id = i.id
        UNION ALL
        SELECT x.id, x.state, 1 FROM @schema@.tasks x
         WHERE i.unique_key IS NOT NULL AND x.queue = i.queue AND x.unique_key = i.unique_key
           AND x.state NOT IN ('succeeded', 'failed', 'dead', 'cancelled')
        ORDER BY 3
        LIMIT 1) t
