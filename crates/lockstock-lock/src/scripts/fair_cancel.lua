-- A fair-lock waiter gives up: leaves the queue, unless the lock was handed to it meanwhile.
-- When the lock is free, it then goes to the oldest live waiter (the caller may have been the
-- head everyone waited for), announced on that waiter's own channel as
-- "token\nfence\nserver_ms\nttl_ms".
--
-- KEYS[1]: lock key      (string "token\nfence\nsince_ms\nowner", PX ttl)
-- KEYS[2]: fence counter
-- KEYS[3]: queue         (list of waiting tokens, oldest first)
-- KEYS[4]: waiters       (hash token -> "ttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner")
-- ARGV[1]: token of the waiter
-- Returns: {1, fence, pttl_ms}  the lock is the waiter's after all (handed over just before)
--          {0}                  not held by the waiter; its queue entry is gone
local token = ARGV[1]
local value = redis.call('GET', KEYS[1])
if held_by(value, token) then
  return {1, fence_of(value), redis.call('PTTL', KEYS[1])}
end
redis.call('LREM', KEYS[3], 0, token)
redis.call('HDEL', KEYS[4], token)
if value then
  return {0}
end
local now = server_now_ms()
local head, ttl, channel, owner = pop_live_waiter(KEYS[3], KEYS[4], now, nil)
if head then
  hand_over(KEYS[1], KEYS[2], head, owner, ttl, channel, now)
end
return {0}
