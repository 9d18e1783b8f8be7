SELECT q.name, q.paused, q.policy FROM @schema@.queues q
 WHERE %(queues)s::text[] IS NULL OR q.name = ANY(%(queues)s::text[])
