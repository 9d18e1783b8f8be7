-- Store a queue's scheduling policy (denormalised for SQL, plus its plain form).
INSERT INTO @schema@.queues AS q (name, kind, horizons, weights, by_key, default_weight, policy)
VALUES (%(name)s, %(kind)s, %(horizons)s::float8[], %(weights)s::jsonb, %(by_key)s,
        %(default_weight)s, %(policy)s::jsonb)
ON CONFLICT (name) DO UPDATE SET
    kind = EXCLUDED.kind, horizons = EXCLUDED.horizons, weights = EXCLUDED.weights,
    by_key = EXCLUDED.by_key, default_weight = EXCLUDED.default_weight, policy = EXCLUDED.policy
