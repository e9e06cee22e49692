-- Resets the expiry of one member of an expiring set (a semaphore permit, a reader's entry) if
-- it is still there and has not expired.
--
-- KEYS[1]: the set (zset token -> expiry, Redis server time in ms)
-- ARGV[1]: token of the caller
-- ARGV[2]: new ttl in milliseconds (> 0)
-- Returns: 1 extended, 0 gone (expired, released or never granted)
local now = server_now_ms()
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
