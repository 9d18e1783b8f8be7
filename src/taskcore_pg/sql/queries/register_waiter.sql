-- A listening wait's look (PostgresBackend.wait): ready.sql, which the backend puts in
-- @look@, and, if it found nothing, the waiter's registration in ready_waiters
-- (migration 0009) in the same statement: an enqueue that takes the registration
-- notifies the waiter's own channel. A look that finds work registers nothing (the
-- worker claims next, and an enqueue would take a waiter that no longer waits).
-- The registration never waits for a lock: a row an enqueue holds (it is taking it,
-- perhaps in a caller's long transaction) is left to it, as it notifies this waiter
-- when it commits; so an upsert (ON CONFLICT waits for such a row) is split in an
-- update of the row if it is free and an insert if there is none.
WITH look (ready) AS (
@look@
), renewed AS (
    UPDATE @schema@.ready_waiters w
       SET queues = %(queues)s::text[], channel = %(channel)s, expires_at = %(expires_at)s
     WHERE w.id = (SELECT r.id FROM @schema@.ready_waiters r WHERE r.id = %(waiter)s
                     FOR UPDATE SKIP LOCKED)
       AND NOT (SELECT look.ready FROM look)
), registered AS (
    INSERT INTO @schema@.ready_waiters (id, queues, channel, expires_at)
    SELECT %(waiter)s, %(queues)s::text[], %(channel)s, %(expires_at)s
     WHERE NOT (SELECT look.ready FROM look)
       AND NOT EXISTS (SELECT 1 FROM @schema@.ready_waiters r WHERE r.id = %(waiter)s)
    ON CONFLICT (id) DO NOTHING
)
SELECT look.ready FROM look
