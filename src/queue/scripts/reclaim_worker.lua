-- Hands a worker's whole processing list back to the pending list and unregisters the worker.
-- KEYS[1]: the worker's liveness key
-- KEYS[2]: the worker's processing list
-- KEYS[3]: the pending list
-- KEYS[4]: the set of registered workers
-- ARGV[1]: the worker id (its member in KEYS[4])
-- ARGV[2]: 'if_dead' to act only when the liveness key is gone (recovery by another worker);
--          'always' for a worker deregistering itself
-- Returns: the number of messages moved back, or -1 when ARGV[2] is 'if_dead' and the worker is
--          alive (nothing changed).
-- The messages go to the front of the queue (the RPOP end), oldest first, because they were
-- taken before everything still pending.
if ARGV[2] == 'if_dead' and redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local moved = 0
while redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT') do
  moved = moved + 1
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[4], ARGV[1])
return moved
