-- True (a row) the first time a key is seen within its TTL.
INSERT INTO @schema@.once_keys AS o (key, expires_at) VALUES (%(key)s, %(expires_at)s)
ON CONFLICT (key) DO UPDATE SET expires_at = EXCLUDED.expires_at
 WHERE o.expires_at <= %(now)s
RETURNING 1
