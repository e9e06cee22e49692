-- A waiter gives up: leaves the wait queue (its entry found by token, so a retried call after a
-- lost reply still finds it), unless the lock was handed to it meanwhile.
--
-- KEYS[1]: lock key
-- KEYS[2]: wait queue
-- ARGV[1]: token of the waiter
-- Returns: {1, fence, pttl_ms}  the lock is the waiter's after all (handed off just before)
--          {0}                  not held by the waiter; its queue entry is gone
local token = ARGV[1]
local value = redis.call('GET', KEYS[1])
if held_by(value, token) then
  return {1, fence_of(value), redis.call('PTTL', KEYS[1])}
end
leave_queue(KEYS[2], token)
return {0}
