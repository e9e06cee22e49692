-- The write-back of a Redlock fencing token: raises this instance's counter to the token and,
-- where the caller's lock is still present, records the token in the lock value. Only an
-- instance where the lock is still the caller's counts towards the majority the token needs
-- before it is handed out.
--
-- KEYS[1]: lock key      (string "token\nfence\nsince_ms\nowner", PX ttl)
-- KEYS[2]: fence counter (integer, only ever raised)
-- ARGV[1]: token of the caller
-- ARGV[2]: the fencing token (integer below 2^53)
-- Returns: 1 written under the caller's lock, 0 the lock is not the caller's here (the counter
--          was raised anyway: raising is always safe)
raise_counter(KEYS[2], ARGV[2])
local token = ARGV[1]
local value = redis.call('GET', KEYS[1])
if not held_by(value, token) then
  return 0
end
local since, owner = string.match(value, '^[^\n]*\n[^\n]*\n([^\n]*)\n(.*)$')
redis.call('SET', KEYS[1], lock_value(token, ARGV[2], since or '0', owner or ''), 'KEEPTTL')
return 1
