-- Moves up to N messages from the pending list into a worker's processing list, oldest first,
-- atomically: a message is always in exactly one of the two lists.
-- KEYS[1]: the pending list (consumers take from the right end: oldest first)
-- KEYS[2]: the worker's processing list
-- ARGV[1]: N, the most messages to move (>= 1)
-- Returns: the moved messages, oldest first (an empty array when the pending list was empty)
local moved = redis.call('RPOP', KEYS[1], ARGV[1])
if not moved then
  return {}
end
for i = 1, #moved do
  redis.call('LPUSH', KEYS[2], moved[i])
end
return moved
