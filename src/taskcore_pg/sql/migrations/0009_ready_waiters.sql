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
