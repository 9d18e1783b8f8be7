SELECT id, hostname, pid, queues, concurrency, busy, started_at, heartbeat_at
  FROM @schema@.workers WHERE expires_at > %(now)s
 ORDER BY started_at, id
