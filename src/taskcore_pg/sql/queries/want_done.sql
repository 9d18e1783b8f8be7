-- Register (or renew) this backend as a waiter for results: the settles notify
-- <schema>.done while any registration exists (migration 0005).
INSERT INTO @schema@.done_waiters (id, expires_at) VALUES (%(id)s, %(expires_at)s)
ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at
