-- get.sql as a locking read: waits for a transaction that is changing the row (a
-- settle) to end, then reads what it left (wait_done's first check after registering).
SELECT id, task, queue, priority, state, attempt, enqueued_at, eligible_at, updated_at, body,
       deadline, unique_key, fairness_key, worker, result, errors, cancel_requested,
       started_at, finished_at
  FROM @schema@.tasks WHERE id = %(id)s
   FOR SHARE
