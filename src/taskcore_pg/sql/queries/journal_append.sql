-- Append journal records, in the order given (seq follows it).
INSERT INTO @schema@.journal (stream, at, key, payload)
SELECT j.stream, j.at, j.key, j.payload
  FROM unnest(%(streams)s::text[], %(ats)s::float8[], %(keys)s::text[], %(payloads)s::bytea[])
       WITH ORDINALITY AS j(stream, at, key, payload, n)
 ORDER BY j.n
