-- Compare-and-set: store the value only if the one stored now (unexpired) is
-- %(old)s, or, with %(old)s NULL, if there is none. A row (1) when stored.
-- One statement: the UPDATE re-checks its WHERE on the row a concurrent writer
-- committed, and ON CONFLICT decides on the committed row; only one branch can
-- match (the other has its %(old)s test false).
WITH replaced AS (
    UPDATE @schema@.kv SET value = %(value)s, expires_at = %(expires_at)s
     WHERE %(old)s::bytea IS NOT NULL AND key = %(key)s AND value = %(old)s::bytea
       AND (expires_at IS NULL OR expires_at > %(now)s)
    RETURNING 1
), inserted AS (
    INSERT INTO @schema@.kv AS k (key, value, expires_at)
    SELECT %(key)s, %(value)s, %(expires_at)s WHERE %(old)s::bytea IS NULL
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
     WHERE k.expires_at <= %(now)s
    RETURNING 1
)
SELECT 1 FROM replaced UNION ALL SELECT 1 FROM inserted
