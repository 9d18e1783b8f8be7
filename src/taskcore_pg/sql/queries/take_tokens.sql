-- Token bucket in one statement: refill by elapsed time, take n if there are enough,
-- else report how long until there are. The row lock serialises concurrent takers.
INSERT INTO @schema@.buckets AS b (name, tokens, last, wait)
VALUES (%(name)s,
        CASE WHEN %(capacity)s >= %(n)s THEN %(capacity)s - %(n)s ELSE %(capacity)s END,
        %(now)s,
        CASE WHEN %(capacity)s >= %(n)s THEN 0 ELSE (%(n)s - %(capacity)s) / %(rate)s END)
ON CONFLICT (name) DO UPDATE SET (tokens, last, wait) = (
    SELECT CASE WHEN a.avail >= %(n)s THEN a.avail - %(n)s ELSE a.avail END,
           %(now)s,
           CASE WHEN a.avail >= %(n)s THEN 0 ELSE (%(n)s - a.avail) / %(rate)s END
      FROM (SELECT least(%(capacity)s, b.tokens + (%(now)s - b.last) * %(rate)s) AS avail) a)
RETURNING b.wait
