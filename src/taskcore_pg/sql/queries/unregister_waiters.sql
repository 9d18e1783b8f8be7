-- A closing backend's registrations as an idle waiter (register_waiter.sql).
DELETE FROM @schema@.ready_waiters WHERE id = ANY(%(ids)s::text[])
