-- Resets the hold's TTL if the caller still holds it. A mutex value
-- ("token\nfence\nttl_ms+held_ms[+w]\nowner", lib/mutex_value.lua) is set again with the new TTL
-- and the time held so far (the old TTL minus PTTL, added to what it had), so inspection keeps
-- deriving "since" without a clock; any other exclusive hold (fair lock, writer) only has its
-- TTL reset.
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
local ttl, held = set_ttl_of(value)
if ttl then
  local left = math.max(redis.call('PTTL', KEYS[1]), 0)
  local held_now = held + math.max(ttl - left, 0)
  redis.call('SET', KEYS[1], reheld(value, ARGV[2], held_now), 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
