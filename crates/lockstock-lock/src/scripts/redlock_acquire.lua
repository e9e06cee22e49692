-- One instance's part of a Redlock acquisition: takes the lock when it is free (or re-grants it
-- when it is still the caller's from an earlier attempt) and raises this
-- instance's fence counter to the caller's proposed token, in one step; reports the counter as
-- it was, so the caller can tell whether its proposal beat every counter it read.
--
-- An instance that restarted less than the quarantine ago refuses: it may have lost locks that
-- are still valid elsewhere (a restart without persistence), so granting could let a second
-- holder in. The restart instant comes from INFO (uptime_in_seconds, whole seconds; one second
-- is taken off, so the quarantine errs long, by up to two seconds, never short).
--
-- KEYS[1]: lock key      (string "token\nfence\nsince_ms\nowner", PX ttl)
-- KEYS[2]: fence counter (integer, never expires; only ever raised)
-- ARGV[1]: token (the caller's UUID)
-- ARGV[2]: ttl in milliseconds (> 0)
-- ARGV[3]: owner description (JSON, one line)
-- ARGV[4]: proposed fencing token (integer below 2^53)
-- ARGV[5]: restart quarantine in milliseconds ("0" = none)
-- Returns: {1, counter_before}          acquired; when the lock was still the caller's (a
--                                       leftover of an earlier attempt), granted afresh: TTL
--                                       reset, counter and stored fence raised to the proposal
--          {0, counter, pttl_ms}        held by another token
--          {-1, ready_in_ms}            this instance restarted too recently; refused
local ready_in = quarantine_left(tonumber(ARGV[5]))
if ready_in then
  return {-1, ready_in}
end

local token = ARGV[1]
local counter = tonumber(redis.call('GET', KEYS[2]) or '0')
local value = redis.call('GET', KEYS[1])
if value and not held_by(value, token) then
  return {0, counter, redis.call('PTTL', KEYS[1])}
end

-- Free, or still ours from an earlier attempt whose undo was lost: either way this attempt's
-- grant, with this attempt's TTL and proposal (a leftover must not count with its old TTL and
-- without the new fence).

if counter < tonumber(ARGV[4]) then
  redis.call('SET', KEYS[2], ARGV[4])
end
redis.call('SET', KEYS[1], lock_value(token, ARGV[4], server_now_ms(), ARGV[3]), 'PX', ARGV[2])
return {1, counter}
