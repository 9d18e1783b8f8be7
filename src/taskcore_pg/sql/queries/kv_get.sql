SELECT value FROM @schema@.kv
 WHERE key = %(key)s AND (expires_at IS NULL OR expires_at > %(now)s)
