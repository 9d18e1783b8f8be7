-- taskcore PostgreSQL schema, version 3: fewer index entries written per task.
--
-- No update of a task is HOT (its state, named in the partial indexes' predicates,
-- changes every time), so each transition writes an entry into every index whose
-- predicate the new row version meets. tasks_queue_state (queue, state) took one at
-- enqueue, claim and settle alike. It is replaced by what the partial indexes already
-- give: queued rows are counted through tasks_ready, scheduled / retrying through
-- tasks_due, running through tasks_leased, and finished ones through tasks_ended,
-- which replaces tasks_finished and carries queue and state for index-only counts.
-- Per task from enqueue to success: 10 index entries -> 7.
CREATE INDEX IF NOT EXISTS tasks_ended ON @schema@.tasks (finished_at) INCLUDE (queue, state)
    WHERE state IN ('succeeded', 'failed', 'dead', 'cancelled');
DROP INDEX IF EXISTS @schema@.tasks_finished;
DROP INDEX IF EXISTS @schema@.tasks_queue_state;
