-- Note parents of workflow joins (taskcore.backend.FollowUp with after > 1), in the
-- transaction of the settle that accepted them. One row per join: the upsert takes its
-- row lock (in id order, so two settles never wait on each other in a cycle), and a
-- settle of another parent of the same join waits for this one to commit, then adds
-- to what it wrote. An incomplete join is kept until the latest of its parents'
-- result expiries (%(keeps)s, Infinity: forever), then the reaper deletes it
-- (expire_coordination.sql). Returns each join's parents so far; the caller enqueues
-- and deletes (join_done.sql) the complete ones.
WITH input AS (
    SELECT i.id, array_agg(DISTINCT i.parent) AS parents, max(i.keep) AS keep
      FROM unnest(%(ids)s::text[], %(parents)s::text[], %(keeps)s::float8[])
           AS i(id, parent, keep)
     GROUP BY i.id
)
INSERT INTO @schema@.joins AS j (id, parents, expires_at)
SELECT input.id, input.parents, input.keep FROM input ORDER BY input.id
ON CONFLICT (id) DO UPDATE
   SET parents = ARRAY(SELECT DISTINCT p FROM unnest(j.parents || EXCLUDED.parents) AS u(p)),
       expires_at = greatest(j.expires_at, EXCLUDED.expires_at)
RETURNING j.id, cardinality(j.parents)
