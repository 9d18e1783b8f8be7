-- Cancel waiting tasks at once; flag running ones (their worker learns through extend,
-- or at once through the cancel channel). Terminal and unknown tasks are not touched.
WITH input AS (
    SELECT * FROM unnest(%(ids)s::text[]) WITH ORDINALITY AS i(id, ord)
), changed AS (
    UPDATE @schema@.tasks t SET
        cancel_requested = t.cancel_requested OR t.state = 'running',
        state = CASE WHEN t.state = 'running' THEN 'running' ELSE 'cancelled' END,
        updated_at = CASE WHEN t.state = 'running' THEN t.updated_at ELSE %(now)s END,
        finished_at = CASE WHEN t.state = 'running' THEN t.finished_at ELSE %(now)s END,
        worker = CASE WHEN t.state = 'running' THEN t.worker ELSE NULL END
      FROM input i
     WHERE t.id = i.id AND t.state NOT IN ('succeeded', 'failed', 'dead', 'cancelled')
    RETURNING i.ord, t.id, t.state
), notified AS (
    SELECT count(pg_notify(CASE WHEN c.state = 'running' THEN %(cancel_channel)s
                                ELSE %(done_channel)s END, c.id)) AS n
      FROM changed c
)
SELECT coalesce(array_agg(c.ord), '{}'), (SELECT n FROM notified) FROM changed c
