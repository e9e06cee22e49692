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
local fence = tonumber(ARGV[3])
if tonumber(redis.call('GET', KEYS[2]) or '0') < fence then
  redis.call('SET', KEYS[2], ARGV[3])
end
local token = ARGV[1]
local value = redis.call('GET', KEYS[1])
if value then
  if string.sub(value, 1, #token + 1) ~= token .. '\n' then
    return 0
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
local quarantine = tonumber(ARGV[5])
if quarantine > 0 then
  local info = redis.call('INFO', 'server')
  -- Whole seconds of both the clock and the start time: the true uptime may be a second less.
  local uptime = math.max(0, (tonumber(string.match(info, 'uptime_in_seconds:(%d+)')) or 0) - 1)
  if uptime * 1000 < quarantine then
    return -1
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], token .. '\n' .. ARGV[3] .. '\n' .. now .. '\n' .. ARGV[4], 'PX', ARGV[2], 'NX')
return 2
