-- Push back the expiry of leases still held under their token; report cancel requests.
WITH input AS (
    SELECT * FROM unnest(%(ids)s::text[], %(tokens)s::bigint[])
           WITH ORDINALITY AS i(id, token, ord)
), extended AS (
    UPDATE @schema@.tasks t SET expires_at = %(expires_at)s
      FROM input i
     WHERE t.id = i.id AND t.token = i.token AND t.state = 'running'
    RETURNING i.ord, t.cancel_requested
)
SELECT e.ord, e.cancel_requested FROM extended e
