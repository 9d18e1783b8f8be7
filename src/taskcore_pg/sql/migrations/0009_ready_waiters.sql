-- taskcore PostgreSQL schema, version 9: an enqueue wakes one idle worker, not all.
--
-- Every idle worker LISTENs on <schema>.ready, so each enqueue's NOTIFY woke all of
-- them and each ran a claim, of which one found the task (a thundering herd: with four
-- idle workers at 100 tasks/s, 1.6 times the server's CPU and 2.3 times the workers').
-- A worker that waits now registers here (its queues, the channel only it LISTENs on,
-- until when it waits), in the statement that looks for work before it blocks. An
-- enqueue takes as many registered waiters of its queues as it queued tasks (SKIP
-- LOCKED: concurrent enqueues take different ones) and notifies each on its own
-- channel; it notifies <schema>.ready, as before, only when it took none. A waiter
-- listens on both channels before it registers, so a registration that an enqueue
-- did not see yet means a broadcast it hears.
--
-- UNLOGGED: registrations live for a second or two and mean nothing after a crash
-- (no WAL for their writes; the table is emptied by crash recovery).
CREATE UNLOGGED TABLE IF NOT EXISTS @schema@.ready_waiters (
    id          text PRIMARY KEY,
    queues      text[] NOT NULL,
    channel     text NOT NULL,
    expires_at  double precision NOT NULL
);

-- Wake waiters for tasks that became ready, one in each element of `queues` (one
-- element per task; enqueue, a settle that released tasks, the reaper's requeues,
-- retry): take as many live registrations of those queues (SKIP LOCKED: concurrent
-- callers take different ones), notify each on its own channel (the payload: one of
-- its queues with new work), or, if nobody is registered or it took none, notify
-- `channel` (<schema>.ready) once per queue. Returns the notifications sent. A
-- function, so that a statement with nobody waiting does not plan and open the delete
-- at all (the enqueue, the hot one, checks for registrations before it calls it).
CREATE OR REPLACE FUNCTION @schema@.wake_waiters(
    p_channel text, p_queues text[], p_now double precision
) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    n bigint := 0;
    w record;
BEGIN
    IF EXISTS (SELECT 1 FROM @schema@.ready_waiters) THEN
        FOR w IN
            DELETE FROM @schema@.ready_waiters d
             WHERE d.id IN (SELECT r.id FROM @schema@.ready_waiters r
                             WHERE r.queues && p_queues AND r.expires_at > p_now
                             LIMIT cardinality(p_queues)
                             FOR UPDATE SKIP LOCKED)
            RETURNING d.channel, d.queues
        LOOP
            PERFORM pg_notify(w.channel, (SELECT min(q) FROM unnest(p_queues) AS q
                                           WHERE q = ANY(w.queues)));
            n := n + 1;
        END LOOP;
    END IF;
    IF n = 0 THEN
        SELECT count(pg_notify(p_channel, q)) INTO n
          FROM (SELECT DISTINCT q FROM unnest(p_queues) AS q) AS d;
    END IF;
    RETURN n;
END
$$;
