INSERT INTO @schema@.workers AS w
    (id, hostname, pid, queues, concurrency, busy, started_at, heartbeat_at, expires_at)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s::text[], %(concurrency)s, %(busy)s,
        %(started_at)s, %(heartbeat_at)s, %(expires_at)s)
ON CONFLICT (id) DO UPDATE SET
    hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, queues = EXCLUDED.queues,
    concurrency = EXCLUDED.concurrency, busy = EXCLUDED.busy, started_at = EXCLUDED.started_at,
    heartbeat_at = EXCLUDED.heartbeat_at, expires_at = EXCLUDED.expires_at
