-- Delete up to %(batch)s finished tasks whose result TTL ran out. Bounded, so a
-- backlog of expired rows never holds long locks; the caller loops.
DELETE FROM @schema@.tasks t
 WHERE t.id IN (SELECT x.id FROM @schema@.tasks x
                 WHERE x.purge_at <= %(now)s
                 ORDER BY x.purge_at
                 LIMIT %(batch)s
                   FOR UPDATE SKIP LOCKED)
