-- settle.sql for a batch whose outcomes are all terminal (succeeded, failed, dead,
-- cancelled): the common case, one UPDATE and nothing else. No task goes back to a
-- queue, so no arrival seq, score or fair tag is drawn and the rows need not be locked
-- first (settle.sql's FOR UPDATE costs a WAL record and a heap write per row). The
-- fencing condition (still running under the outcome's token) is part of the UPDATE's
-- WHERE, so PostgreSQL re-checks it on the newest row version if a reaper got there
-- first.
WITH input AS (
    SELECT * FROM unnest(%(ids)b::text[], %(tokens)b::bigint[], %(kinds)b::text[],
                         %(results)b::bytea[], %(errors)b::jsonb[], %(retry_at)b::float8[],
                         %(ttls)b::float8[], %(late)b::boolean[])
           WITH ORDINALITY AS i(id, token, kind, result, error, retry_at, ttl, late, ord)
), settled AS (
    UPDATE @schema@.tasks t SET
        state = i.kind,
        result = CASE WHEN i.kind = 'succeeded' THEN i.result ELSE t.result END,
        errors = CASE WHEN i.error IS NULL THEN t.errors
                      ELSE t.errors || jsonb_build_array(i.error) END,
        worker = NULL,
        updated_at = %(now)s,
        finished_at = %(now)s,
        purge_at = CASE WHEN i.ttl IS NOT NULL THEN %(now)s + i.ttl ELSE t.purge_at END
      FROM input i
     WHERE t.id = i.id AND t.state = 'running' AND t.token = i.token
    RETURNING t.id, t.queue, t.priority, i.late, i.ord
), late AS (
    -- count_late (backend.py): the late counts' upsert when some outcome of the batch
    -- is late; else a plain SELECT, which PostgreSQL drops unplanned (the upsert's
    -- executor set-up alone was ~8 % of the statement's server time)
    @count_late@
), finished AS (
    -- only while some process waits for results (done_wanted(): evaluated per chunk of
    -- ids once the chunk is aggregated, i.e. after its rows were written)
    SELECT count(pg_notify(%(done_channel)s, c.ids)) AS n
      FROM (SELECT string_agg(d.id, ',') AS ids
              FROM (SELECT s.id, (row_number() OVER ()) / 200 AS chunk FROM settled s) d
             GROUP BY d.chunk) c
     WHERE @schema@.done_wanted()
)
SELECT coalesce(array_agg(s.ord), '{}') AS accepted, (SELECT n FROM finished) AS notified
  FROM settled s
