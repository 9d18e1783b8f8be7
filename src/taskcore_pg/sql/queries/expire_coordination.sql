-- Forget expired cron-tick keys, kv entries, worker, result-waiter and idle-waiter
-- registrations (an idle waiter's a minute after it ended: enqueues skip it already),
-- token buckets that have refilled (a full bucket answers like an absent one), and
-- incomplete workflow joins whose parents' results have expired (join.sql).
WITH o AS (DELETE FROM @schema@.once_keys WHERE expires_at <= %(now)s RETURNING 1),
     k AS (DELETE FROM @schema@.kv WHERE expires_at <= %(now)s RETURNING 1),
     w AS (DELETE FROM @schema@.workers WHERE expires_at <= %(now)s RETURNING 1),
     b AS (DELETE FROM @schema@.buckets WHERE full_at <= %(now)s RETURNING 1),
     d AS (DELETE FROM @schema@.done_waiters WHERE expires_at <= %(now)s RETURNING 1),
     j AS (DELETE FROM @schema@.joins WHERE expires_at <= %(now)s RETURNING 1),
     r AS (DELETE FROM @schema@.ready_waiters WHERE expires_at <= %(now)s - 60 RETURNING 1)
SELECT (SELECT count(*) FROM o) + (SELECT count(*) FROM k) + (SELECT count(*) FROM w)
     + (SELECT count(*) FROM b) + (SELECT count(*) FROM d) + (SELECT count(*) FROM j)
