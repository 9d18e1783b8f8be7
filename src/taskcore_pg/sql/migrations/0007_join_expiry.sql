-- taskcore PostgreSQL schema, version 7: incomplete workflow joins expire.
--
-- A chord whose member failed (or was cancelled, or dead-lettered) never completes its
-- join, and its row used to stay forever. A join can only complete usefully while the
-- results it counts are kept, so each parent's settle now pushes expires_at to at
-- least its own success plus its result TTL (Infinity: kept forever), and the reaper
-- deletes the rows past it (expire_coordination.sql). Rows from before this migration
-- do not know their parents' TTL: they get the longest result retention an App
-- allows (365 days) from now.
ALTER TABLE @schema@.joins ADD COLUMN IF NOT EXISTS expires_at double precision NOT NULL DEFAULT 'Infinity';
UPDATE @schema@.joins SET expires_at = extract(epoch FROM now()) + 365 * 86400
 WHERE expires_at = 'Infinity';
CREATE INDEX IF NOT EXISTS joins_expires_at ON @schema@.joins (expires_at);
