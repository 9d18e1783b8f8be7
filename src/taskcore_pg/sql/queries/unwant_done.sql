DELETE FROM @schema@.done_waiters WHERE id = %(id)s
