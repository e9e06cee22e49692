-- Gives a semaphore permit back if the caller still holds it, and hands free permits to the
-- oldest live waiters (each announced on that waiter's own channel as
-- "token\nfence\nserver_ms\nttl_ms").
--
-- KEYS[1]: holders  (zset token -> expiry ms)
-- KEYS[2]: owners   (hash token -> "fence\nsince_ms\nowner")
-- KEYS[3]: fence counter
-- KEYS[4]: queue    (list of waiting tokens, oldest first)
-- KEYS[5]: waiters  (hash token -> "ttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner")
-- ARGV[1]: token of the caller
-- ARGV[2]: permits N (>= 1)
-- Returns: 1 released, nobody waiting; 2 released and permits handed to waiters;
--          0 not held (expired, or never granted): nothing changed for the caller
local now = server_now_ms()
drop_expired(KEYS[1], KEYS[2], now)

if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])

if hand_free_permits(now) > 0 then return 2 end
return 1
