-- Moves one message from a worker's processing list to the dead letter list, atomically.
-- KEYS[1]: the worker's processing list
-- KEYS[2]: the dead letter list
-- ARGV[1]: the message, byte for byte as it was reserved
-- ARGV[2]: the dead letter entry to push (JSON built by the caller: payload, reason, worker, at)
-- Returns: 1 when the message was in the processing list and is now dead-lettered;
--          0 when it was not there (acknowledged or recovered elsewhere) and nothing changed.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
