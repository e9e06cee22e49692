-- One instance's part of a Redlock extension. Resets the TTL when the lock is the caller's;
-- when the key is missing here (this instance restarted, or was unreachable past the TTL) and
-- the instance is out of its restart quarantine, sets it again for the caller (NX: never over
-- another holder), so the heartbeat keeps a majority as instances come and go. Raises the fence
-- counter to the caller's token either way, repairing an instance that lost its counters.
--
-- KEYS[1]: lock key      (string "token\nfence\nsince_ms\nowner", PX ttl)
-- KEYS[2]: fence counter (integer, only ever raised)
-- ARGV[1]: token of the caller
-- ARGV[2]: new ttl in milliseconds (> 0)
-- ARGV[3]: the caller's fencing token
-- ARGV[4]: owner description (JSON, one line)
-- ARGV[5]: restart quarantine in milliseconds ("0" = none)
-- Returns: 1 extended, 2 set again (it was missing), 0 held by another token here,
--          -1 missing and this instance is in its restart quarantine
raise_counter(KEYS[2], ARGV[3])
local token = ARGV[1]
local value = redis.call('GET', KEYS[1])
if value then
  if not held_by(value, token) then
    return 0
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if quarantine_left(tonumber(ARGV[5])) then
  return -1
end
redis.call('SET', KEYS[1], lock_value(token, ARGV[3], server_now_ms(), ARGV[4]), 'PX', ARGV[2], 'NX')
return 2
