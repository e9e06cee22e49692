-- The first part of acquire.lua: its uncontended path, run before any helper from lib/ is
-- defined, so the common call pays for no closures it does not use (measured with
-- redis-benchmark: about 1 µs of server time per call, of 7).
--
-- An unqueued, unobserved call (ARGV[4] "0", ARGV[6] "0") takes the fence and, when the key is
-- absent, the lock: the same INCR + SET NX PX GET, the same value
-- ("token\nfence\nttl_ms+0\nowner", lib/mutex_value.lua's mutex_value with held 0, unmarked) and
-- the same reply as acquire.lua's unqueued branch. When the key is present it leaves the value
-- it found in `unqueued_found` and falls through: acquire.lua answers (ours on a retried call,
-- or held by another), without a second INCR or SET.
--
-- A grant here answers the bare fence (an integer) instead of acquire.lua's {1, fence, ttl_ms}:
-- the TTL granted is the one asked for (ARGV[2]), and a table reply costs the server about half
-- a microsecond to build and the client an array to parse.
--
-- KEYS and ARGV: acquire.lua's.
-- Returns: fence (integer)  acquired, for ARGV[2] ms; otherwise acquire.lua's reply.
local unqueued_found = nil
if ARGV[4] == '0' and ARGV[6] ~= '1' then
  local fence = redis.call('INCR', KEYS[2])
  unqueued_found = redis.call('SET', KEYS[1],
    ARGV[1] .. '\n' .. fence .. '\n' .. ARGV[2] .. '+0\n' .. ARGV[3], 'NX', 'PX', ARGV[2], 'GET')
  if not unqueued_found then
    return fence
  end
end
