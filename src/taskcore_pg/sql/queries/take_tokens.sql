-- Token bucket in one statement: refill by elapsed time, take n if there are enough,
-- else report how long until there are. The row lock serialises concurrent takers.
-- full_at: when the bucket is full again, and the reaper may forget it.
INSERT INTO @schema@.buckets AS b (name, tokens, last, wait, full_at)
VALUES (%(name)s,
        CASE WHEN %(capacity)s >= %(n)s THEN %(capacity)s - %(n)s ELSE %(capacity)s END,
        %(now)s,
        CASE WHEN %(capacity)s >= %(n)s THEN 0 ELSE (%(n)s - %(capacity)s) / %(rate)s END,
        %(now)s + CASE WHEN %(capacity)s >= %(n)s THEN %(n)s / %(rate)s ELSE 0 END)
ON CONFLICT (name) DO UPDATE SET (tokens, last, wait, full_at) = (
    SELECT a.left_, %(now)s,
           CASE WHEN a.avail >= %(n)s THEN 0 ELSE (%(n)s - a.avail) / %(rate)s END,
           %(now)s + (%(capacity)s - a.left_) / %(rate)s
      FROM (SELECT s.avail, CASE WHEN s.avail >= %(n)s THEN s.avail - %(n)s ELSE s.avail END
                   AS left_
              FROM (SELECT least(%(capacity)s, b.tokens + (%(now)s - b.last) * %(rate)s)
                           AS avail) s) a)
RETURNING b.wait
