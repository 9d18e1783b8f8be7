-- taskcore PostgreSQL schema, version 1.
--
-- @schema@ is replaced by the quoted schema name before this file runs. Every object
-- lives in that schema, so one database can host several taskcore deployments.
-- Times are epoch seconds (double precision) supplied by the application's clock,
-- never now(): the conformance suite drives the backend with a fake clock.

CREATE SEQUENCE IF NOT EXISTS @schema@.task_seq;   -- arrival order, re-drawn when a task becomes ready
CREATE SEQUENCE IF NOT EXISTS @schema@.token_seq;  -- fencing tokens, one per claim or reap

CREATE TABLE IF NOT EXISTS @schema@.queues (
    name            text PRIMARY KEY,
    -- the scheduling policy, denormalised for SQL (policy keeps the plain form for stats)
    kind            text NOT NULL DEFAULT 'deadline',
    horizons        double precision[] NOT NULL DEFAULT '{0,60,300,1800,7200}',
    weights         jsonb NOT NULL DEFAULT '{}',
    by_key          boolean NOT NULL DEFAULT false,
    default_weight  double precision NOT NULL DEFAULT 1,
    policy          jsonb,
    paused          boolean NOT NULL DEFAULT false,
    virtual_time    double precision NOT NULL DEFAULT 0  -- weighted fair: V
);

-- weighted fair: the finish tag F of each class (priority label or fairness key)
CREATE TABLE IF NOT EXISTS @schema@.fair_finish (
    queue   text NOT NULL,
    cls     text NOT NULL,
    finish  double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, cls)
);

CREATE TABLE IF NOT EXISTS @schema@.tasks (
    id               text PRIMARY KEY,
    task             text NOT NULL,
    queue            text NOT NULL,
    priority         smallint NOT NULL CHECK (priority BETWEEN 0 AND 4),
    state            text NOT NULL CHECK (state IN ('scheduled', 'waiting', 'queued', 'running',
                         'succeeded', 'failed', 'retrying', 'dead', 'cancelled')),
    attempt          integer NOT NULL DEFAULT 0,
    token            bigint NOT NULL DEFAULT 0,
    seq              bigint NOT NULL DEFAULT nextval('@schema@.task_seq'),
    score            double precision,          -- claim order; NULL only inside a transaction
    enqueued_at      double precision NOT NULL,
    msg_eligible_at  double precision NOT NULL,  -- as enqueued (the lease's message)
    eligible_at      double precision NOT NULL,  -- current (moves on retry / requeue)
    updated_at       double precision NOT NULL,
    deadline         double precision,
    unique_key       text,
    fairness_key     text,
    result_ttl       double precision,
    body             bytea NOT NULL,
    worker           text,
    expires_at       double precision,
    result           bytea,
    errors           jsonb NOT NULL DEFAULT '[]',
    cancel_requested boolean NOT NULL DEFAULT false,
    started_at       double precision,
    finished_at      double precision,
    purge_at         double precision
);

-- The claim: ready rows of a queue in score order. Partial, so finished rows cost nothing.
-- Priority is not a key column: the policy's score already orders across priorities.
CREATE INDEX IF NOT EXISTS tasks_ready ON @schema@.tasks (queue, score, seq)
    WHERE state = 'queued';
-- Promotion of due scheduled / retrying rows.
CREATE INDEX IF NOT EXISTS tasks_due ON @schema@.tasks (queue, eligible_at, seq)
    WHERE state IN ('scheduled', 'retrying');
-- The reaper: running rows by lease expiry.
CREATE INDEX IF NOT EXISTS tasks_leased ON @schema@.tasks (expires_at)
    WHERE state = 'running';
-- Result TTL expiry and age-based retention.
CREATE INDEX IF NOT EXISTS tasks_purge ON @schema@.tasks (purge_at)
    WHERE purge_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_finished ON @schema@.tasks (finished_at)
    WHERE state IN ('succeeded', 'failed', 'dead', 'cancelled');
-- Unique keys: one live task per (queue, key); terminal tasks release the key.
CREATE UNIQUE INDEX IF NOT EXISTS tasks_unique ON @schema@.tasks (queue, unique_key)
    WHERE unique_key IS NOT NULL
      AND state NOT IN ('succeeded', 'failed', 'dead', 'cancelled');
-- Admin: stats, listing and purge by queue and state. There is deliberately no index
-- on the listing order (enqueued_at, id): it cost about a quarter of bulk-enqueue throughput, and
-- an unfiltered listing is a top-N sort that only the dashboard pays for.
CREATE INDEX IF NOT EXISTS tasks_queue_state ON @schema@.tasks (queue, state);

CREATE TABLE IF NOT EXISTS @schema@.late_counts (
    queue     text NOT NULL,
    priority  smallint NOT NULL,
    n         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, priority)
);

CREATE TABLE IF NOT EXISTS @schema@.workers (
    id            text PRIMARY KEY,
    hostname      text NOT NULL,
    pid           integer NOT NULL,
    queues        text[] NOT NULL,
    concurrency   integer NOT NULL,
    busy          integer NOT NULL,
    started_at    double precision NOT NULL,
    heartbeat_at  double precision NOT NULL,
    expires_at    double precision NOT NULL
);

CREATE TABLE IF NOT EXISTS @schema@.buckets (
    name    text PRIMARY KEY,
    tokens  double precision NOT NULL,
    last    double precision NOT NULL,
    wait    double precision NOT NULL DEFAULT 0  -- answer of the latest take, for RETURNING
);

CREATE TABLE IF NOT EXISTS @schema@.once_keys (
    key         text PRIMARY KEY,
    expires_at  double precision NOT NULL
);

CREATE TABLE IF NOT EXISTS @schema@.kv (
    key         text PRIMARY KEY,
    value       bytea NOT NULL,
    expires_at  double precision
);

CREATE TABLE IF NOT EXISTS @schema@.runtimes (
    task   text PRIMARY KEY,
    n      bigint NOT NULL,
    total  double precision NOT NULL
);

-- The stateless policy scores, exactly as taskcore.scheduling.static_score.
-- A plain SQL function so the planner inlines it.
CREATE OR REPLACE FUNCTION @schema@.static_score(
    kind text, horizons double precision[], priority integer,
    ready_at double precision, deadline double precision
) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE kind
        WHEN 'fifo' THEN ready_at
        WHEN 'priority' THEN priority * 8589934592.0::double precision + ready_at
        ELSE least(coalesce(deadline, ready_at + horizons[priority + 1]),
                   ready_at + horizons[priority + 1])
    END
$$;

-- Weighted fair queueing: give the tasks p_ids (in the order they became ready) their
-- virtual finish tags, exactly as taskcore.scheduling.FairState.tag does one by one:
-- tag = max(V, F[class]) + 1/weight, F[class] = tag. Tasks of queues without the fair
-- policy are ignored. The class rows are locked in a fixed order, so concurrent
-- callers serialise per class instead of deadlocking.
CREATE OR REPLACE FUNCTION @schema@.fair_tags(p_ids text[])
RETURNS TABLE (task_id text, tag double precision)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    v_ids text[];
    v_queues text[];
    v_classes text[];
    v_weights double precision[];
    v_vt double precision[];
BEGIN
    SELECT array_agg(x.id ORDER BY x.ord), array_agg(x.queue ORDER BY x.ord),
           array_agg(x.cls ORDER BY x.ord), array_agg(x.w ORDER BY x.ord),
           array_agg(x.vt ORDER BY x.ord)
      INTO v_ids, v_queues, v_classes, v_weights, v_vt
      FROM (SELECT i.ord, t.id, t.queue, c.cls,
                   coalesce((q.weights ->> c.cls)::double precision, q.default_weight) AS w,
                   q.virtual_time AS vt
              FROM unnest(p_ids) WITH ORDINALITY AS i(id, ord)
              JOIN @schema@.tasks t ON t.id = i.id
              JOIN @schema@.queues q ON q.name = t.queue AND q.kind = 'fair'
             CROSS JOIN LATERAL (SELECT CASE WHEN q.by_key THEN coalesce(t.fairness_key, '')
                                             ELSE 'P' || t.priority END AS cls) c) x;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    INSERT INTO @schema@.fair_finish (queue, cls)
    SELECT DISTINCT u.queue, u.cls FROM unnest(v_queues, v_classes) AS u(queue, cls)
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING;

    PERFORM 1 FROM @schema@.fair_finish f
     WHERE (f.queue, f.cls) IN (SELECT u.queue, u.cls FROM unnest(v_queues, v_classes) AS u(queue, cls))
     ORDER BY f.queue, f.cls
       FOR UPDATE;

    -- Running sums replay the one-by-one additions: the first term of each class is
    -- max(V, F), then 1/weight per task, summed in order (float8 sum is sequential).
    RETURN QUERY
    WITH inp AS (
        SELECT * FROM unnest(v_ids, v_queues, v_classes, v_weights, v_vt)
                 WITH ORDINALITY AS u(id, queue, cls, w, vt, ord)
    ), steps AS (
        SELECT NULL::text AS id, s.queue, s.cls, 0::bigint AS ord,
               greatest(s.vt, f.finish) AS x
          FROM (SELECT DISTINCT ON (queue, cls) queue, cls, vt FROM inp) s
          JOIN @schema@.fair_finish f ON f.queue = s.queue AND f.cls = s.cls
        UNION ALL
        SELECT inp.id, inp.queue, inp.cls, inp.ord, 1.0::double precision / inp.w FROM inp
    ), tagged AS (
        SELECT steps.id, steps.queue, steps.cls, steps.ord,
               sum(steps.x) OVER (PARTITION BY steps.queue, steps.cls ORDER BY steps.ord
                                  ROWS UNBOUNDED PRECEDING) AS tag
          FROM steps
    ), last AS (
        UPDATE @schema@.fair_finish f SET finish = l.tag
          FROM (SELECT DISTINCT ON (queue, cls) queue, cls, tag FROM tagged
                 ORDER BY queue, cls, ord DESC) l
         WHERE f.queue = l.queue AND f.cls = l.cls
    )
    SELECT tagged.id, tagged.tag FROM tagged WHERE tagged.id IS NOT NULL ORDER BY tagged.ord;
END
$$;
