INSERT INTO @schema@.kv AS k (key, value, expires_at) VALUES (%(key)s, %(value)s, %(expires_at)s)
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
