-- taskcore PostgreSQL schema, version 4: token buckets are forgotten once full again.
--
-- A bucket that has refilled to its capacity answers exactly like one that does not
-- exist, so the reaper deletes it (expire_coordination.sql) and per-key buckets
-- (rate_key) do not pile up. full_at is when the bucket's latest take will have
-- refilled, written by take_tokens.sql. Rows from before this migration do not know
-- their rate: they get infinity (kept, never refilled early) until their next take.
ALTER TABLE @schema@.buckets ADD COLUMN IF NOT EXISTS full_at double precision NOT NULL DEFAULT 'Infinity';
CREATE INDEX IF NOT EXISTS buckets_full_at ON @schema@.buckets (full_at);
