-- A semaphore waiter gives up: leaves the queue, unless a permit was handed to it meanwhile.
-- Free permits then go to the oldest live waiters (the caller may have been blocking them).
--
-- KEYS[1]: holders  (zset token -> expiry ms)
-- KEYS[2]: owners   (hash token -> "fence\nsince_ms\nowner")
-- KEYS[3]: fence counter
-- KEYS[4]: queue    (list of waiting tokens, oldest first)
-- KEYS[5]: waiters  (hash token -> "ttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner")
-- ARGV[1]: token of the waiter
-- ARGV[2]: permits N (>= 1)
-- Returns: {1, fence, pttl_ms}  the waiter holds a permit after all (handed over just before)
--          {0}                  no permit; the waiter's queue entry is gone
local now = server_now_ms()
drop_expired(KEYS[1], KEYS[2], now)

local fence, left = member_hold(KEYS[1], KEYS[2], ARGV[1], now)
if fence then
  return {1, fence, left}
end
redis.call('LREM', KEYS[4], 0, ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
hand_free_permits(now)
return {0}
