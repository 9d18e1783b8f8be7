-- taskcore PostgreSQL schema, version 6: workflow joins.
--
-- A chord's callback (a follow-up with after = n, taskcore.backend.FollowUp) is
-- enqueued once n distinct parents have succeeded. Each parent's settle adds its id
-- here, in the settle's transaction; the row lock of the upsert orders concurrent
-- settles of one join, so exactly one of them sees the last parent arrive, enqueues
-- the callback and deletes the row.
CREATE TABLE IF NOT EXISTS @schema@.joins (
    id       text COLLATE "C" PRIMARY KEY,
    parents  text[] NOT NULL
);
