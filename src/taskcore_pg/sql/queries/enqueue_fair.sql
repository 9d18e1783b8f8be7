-- Weighted fair tags for tasks just stored by enqueue.sql (same transaction).
UPDATE @schema@.tasks t SET score = f.tag
  FROM @schema@.fair_tags(%(ids)s::text[]) f
 WHERE t.id = f.task_id
