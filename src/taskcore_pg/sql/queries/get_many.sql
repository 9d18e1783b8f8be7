SELECT id, task, queue, priority, state, attempt, enqueued_at, eligible_at, updated_at, body,
       deadline, unique_key, fairness_key, worker, result, errors, cancel_requested,
       started_at, finished_at
  FROM @schema@.tasks WHERE id = ANY(%(ids)s::text[])
