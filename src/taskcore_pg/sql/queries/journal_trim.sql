-- Retention: delete up to %(batch)s records of one stream earlier than %(before)s.
-- Bounded, so a backlog never holds long locks; the caller loops.
DELETE FROM @schema@.journal j
 WHERE j.seq IN (SELECT x.seq FROM @schema@.journal x
                  WHERE x.stream = %(stream)s AND x.at < %(before)s
                  ORDER BY x.at
                  LIMIT %(batch)s
                    FOR UPDATE SKIP LOCKED)
