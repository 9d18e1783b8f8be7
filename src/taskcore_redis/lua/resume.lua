-- Resume a paused queue and wake its idle workers as an enqueue of what is queued
-- would (wake(): registered waiters first, one marker per queued task, at least one).
redis.call('HDEL', K_META, 'paused')
wake(math.max(1, tonumber(redis.call('HGET', K_CNT, 'queued') or '0')))
return 1
