-- Releases the lock if the caller still holds it, handing it straight to the oldest live waiter.
--
-- A hand-off sets the lock to the waiter's token with a fresh fencing token and the waiter's TTL,
-- then publishes "token\nfence\nserver_ms\nttl_ms" on the waiter's own channel (from its queue
-- entry, see acquire.lua); the waiter owns the lock from that moment without another round trip.
-- Expired queue entries (waiters that gave up or died) are skipped.
--
-- KEYS[1]: lock key
-- KEYS[2]: fence counter
-- KEYS[3]: wait queue
-- ARGV[1]: token of the caller
-- Returns: 1 released (nobody waiting), 2 handed to the next waiter,
--          0 not released: the lock is gone (expired) or held by another token
local token = ARGV[1]
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, #token + 1) ~= token .. '\n' then
  return 0
end

local now = nil
while true do
  local entry = redis.call('LPOP', KEYS[3])
  if not entry then
    redis.call('DEL', KEYS[1])
    return 1
  end
  local waiter, ttl, expires, channel, owner =
    string.match(entry, '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  if waiter and tonumber(expires) and tonumber(expires) > now and tonumber(ttl) then
    local fence = redis.call('INCR', KEYS[2])
    redis.call('SET', KEYS[1], waiter .. '\n' .. fence .. '\n' .. now .. '\n' .. owner, 'PX', ttl)
    redis.call('PUBLISH', channel, waiter .. '\n' .. fence .. '\n' .. now .. '\n' .. ttl)
    return 2
  end
end
