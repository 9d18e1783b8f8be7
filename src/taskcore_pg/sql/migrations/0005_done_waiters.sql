-- taskcore PostgreSQL schema, version 5: `done` notifications only while someone waits.
--
-- Every settle that ended tasks used to NOTIFY <schema>.done, and PostgreSQL wakes
-- every LISTENing session of the database for each notification (whatever channel it
-- listens on), though most deployments never wait for results. A process that waits
-- (wait_done: TaskHandle.result) now registers here first: one row per backend
-- instance, renewed while it is in use, deleted when the backend closes and forgotten
-- by the reaper once expired. The settles notify only while a row exists.
CREATE TABLE IF NOT EXISTS @schema@.done_waiters (
    id          text PRIMARY KEY,
    expires_at  double precision NOT NULL
);

-- Does any process wait for results? VOLATILE plpgsql on purpose: its query reads with
-- a snapshot taken when it is called (after the settle has written its rows), not with
-- the settle statement's, so it sees a waiter that registered while the settle ran
-- (and wait_done's first check, a locking read, covers a settle that ran before).
CREATE OR REPLACE FUNCTION @schema@.done_wanted() RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM @schema@.done_waiters);
END
$$;
