-- taskcore PostgreSQL schema, version 8: the journal (audit trail, performance metrics,
-- task logs): append-only records per stream, removed by time (journal_trim.sql)
-- according to each stream's retention. `seq` orders records of the same time in the
-- order they were appended. Reads go by (stream, at) or, for one key (a task id), by
-- (stream, key, at); trimming goes by (stream, at).
CREATE TABLE IF NOT EXISTS @schema@.journal (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream text COLLATE "C" NOT NULL,
    at double precision NOT NULL,
    key text COLLATE "C",
    payload bytea NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_stream_at ON @schema@.journal (stream, at, seq);
CREATE INDEX IF NOT EXISTS journal_stream_key_at ON @schema@.journal (stream, key, at, seq)
 WHERE key IS NOT NULL;
