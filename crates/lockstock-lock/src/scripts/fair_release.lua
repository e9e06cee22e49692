-- Releases a fair lock if the caller still holds it, handing it straight to the oldest live
-- waiter (announced on that waiter's own channel as "token\nfence\nserver_ms\nttl_ms").
-- Waiters whose lease ran out are skipped.
--
-- KEYS[1]: lock key      (string "token\nfence\nsince_ms\nowner", PX ttl)
-- KEYS[2]: fence counter
-- KEYS[3]: queue         (list of waiting tokens, oldest first)
-- KEYS[4]: waiters       (hash token -> "ttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner")
-- ARGV[1]: token of the caller
-- Returns: 1 released (nobody waiting), 2 handed to the next waiter,
--          0 not released: the lock is gone (expired) or held by another token
local value = redis.call('GET', KEYS[1])
if not held_by(value, ARGV[1]) then
  return 0
end
local now = server_now_ms()
local head, ttl, channel, owner = pop_live_waiter(KEYS[3], KEYS[4], now, nil)
if not head then
  redis.call('DEL', KEYS[1])
  return 1
end
hand_over(KEYS[1], KEYS[2], head, owner, ttl, channel, now)
return 2
