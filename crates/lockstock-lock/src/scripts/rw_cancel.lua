-- A read/write lock waiter gives up: leaves the queue, unless it was granted meanwhile. The
-- oldest live waiters that fit are then granted (the caller may have been blocking them).
--
-- KEYS[1]: writer   (string "token\nfence\nsince_ms\nowner", PX ttl)
-- KEYS[2]: readers  (zset token -> expiry ms)
-- KEYS[3]: owners   (hash reader token -> "fence\nsince_ms\nowner")
-- KEYS[4]: fence counter
-- KEYS[5]: queue    (list of waiting tokens, oldest first)
-- KEYS[6]: waiters  (hash token -> "mode\nttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner")
-- ARGV[1]: token of the waiter
-- ARGV[2]: mode wanted: "r" or "w"
-- Returns: {1, fence, pttl_ms}  the waiter holds the lock after all (granted just before)
--          {0}                  not held; the waiter's queue entry is gone
local now = server_now_ms()
local token = ARGV[1]

drop_expired(KEYS[2], KEYS[3], now)

local writer = redis.call('GET', KEYS[1])
if ARGV[2] == 'w' and held_by(writer, token) then
  return {1, fence_of(writer), redis.call('PTTL', KEYS[1])}
end
if ARGV[2] == 'r' then
  local fence, left = member_hold(KEYS[2], KEYS[3], token, now)
  if fence then
    return {1, fence, left}
  end
end
redis.call('LREM', KEYS[5], 0, token)
redis.call('HDEL', KEYS[6], token)

rw_grant_waiters(now, writer, nil)
return {0}
