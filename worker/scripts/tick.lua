-- A stage's tick: only when nothing of the stage waits in its Celery queue and this second's
-- lease is free. KEYS: lease, Celery queue list. ARGV: owner, lease ms.
if redis.call('LLEN', KEYS[2]) > 0 then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
