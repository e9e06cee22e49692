-- Moves one message from a worker's processing list back to the pending list, atomically.
-- KEYS[1]: the worker's processing list
-- KEYS[2]: the pending list
-- ARGV[1]: the message, byte for byte as it was reserved
-- Returns: 1 when the message was moved to the back of the queue (the LPUSH end: consumers take
--          from the right, so every message already waiting goes first);
--          0 when it was not in the processing list and nothing changed.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
redis.call('LPUSH', KEYS[2], ARGV[1])
return 1
