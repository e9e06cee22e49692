-- Resets the lock's TTL if the caller still holds it.
--
-- KEYS[1]: lock key
-- ARGV[1]: token of the caller
-- ARGV[2]: new ttl in milliseconds (> 0)
-- Returns: 1 extended, 0 the lock is gone (expired or released), -1 held by another token
local value = redis.call('GET', KEYS[1])
if not value then
  return 0
end
if not held_by(value, ARGV[1]) then
  return -1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
