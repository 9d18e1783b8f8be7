SELECT task, n, total FROM @schema@.runtimes WHERE task = ANY(%(tasks)s::text[]) AND n > 0
