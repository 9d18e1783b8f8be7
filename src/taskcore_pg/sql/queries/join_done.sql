-- Forget joins whose follow-up was just enqueued (in the same transaction).
DELETE FROM @schema@.joins WHERE id = ANY(%(ids)s::text[])
