-- Moves one message from a worker's processing list to the dead letter list, atomically, and
-- keeps the dead letter list at most ARGV[3] entries long.
-- KEYS[1]: the worker's processing list
-- KEYS[2]: the dead letter list
-- KEYS[3]: the count of dead letters dropped for the cap
-- ARGV[1]: the message, byte for byte as it was reserved
-- ARGV[2]: the dead letter entry to push (JSON built by the caller: bounded payload prefix,
--          length, hash, reason, worker, at)
-- ARGV[3]: the most entries the dead letter list keeps; the oldest beyond it are dropped and
--          added to KEYS[3]
-- Returns: 1 when the message was in the processing list and is now dead-lettered;
--          0 when it was not there (acknowledged or recovered elsewhere) and nothing changed.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
redis.call('LPUSH', KEYS[2], ARGV[2])
local cap = tonumber(ARGV[3])
local over = redis.call('LLEN', KEYS[2]) - cap
if over > 0 then
  redis.call('LTRIM', KEYS[2], 0, cap - 1)
  redis.call('INCRBY', KEYS[3], over)
end
return 1
