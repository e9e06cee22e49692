-- One instance's part of a Redlock release (also the undo of a failed acquisition): deletes the
-- lock if it is the caller's and announces it on the channel (waiters retry at once). Raises the
-- fence counter to the caller's token first when one is given, repairing an instance that lost
-- its counters.
--
-- KEYS[1]: lock key      (string "token\nfence\nsince_ms\nowner", PX ttl)
-- KEYS[2]: fence counter (integer, only ever raised)
-- ARGV[1]: token of the caller
-- ARGV[2]: the caller's fencing token ("0" = none: an undo)
-- ARGV[3]: release channel
-- Returns: 1 released, 0 not the caller's here (expired, taken, or never set)
if tonumber(ARGV[2]) > 0 then
  raise_counter(KEYS[2], ARGV[2])
end
local value = redis.call('GET', KEYS[1])
if not held_by(value, ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[3], 'released')
return 1
