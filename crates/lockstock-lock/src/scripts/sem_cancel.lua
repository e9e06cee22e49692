-- A semaphore waiter gives up: leaves the queue, unless a permit was handed to it meanwhile.
-- Free permits then go to the oldest live waiters (the caller may have been blocking them).
--
-- KEYS[1]: holders  (zset token -> expiry ms)
-- KEYS[2]: owners   (hash token -> "fence\nsince_ms\nowner")
-- KEYS[3]: fence counter
-- KEYS[4]: queue    (list of waiting tokens, oldest first)
-- KEYS[5]: waiters  (hash token -> "ttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner")
-- ARGV[1]: token of the waiter
-- ARGV[2]: permits N (>= 1)
-- Returns: {1, fence, pttl_ms}  the waiter holds a permit after all (handed over just before)
--          {0}                  no permit; the waiter's queue entry is gone

-- A waiter's entry -> the TTL it is handed the hold with (its TTL, but no longer than its
-- lease: a waiter that died just before the hand-off keeps the hold one lease at most; a live
-- one extends it at once), its lease expiry, its client's hand-off channel, its owner.
local function claim(entry)
  local ttl, lease, span, channel, owner =
    string.match(entry, '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
  if tonumber(ttl) and tonumber(span) then
    ttl = tostring(math.min(tonumber(ttl), tonumber(span)))
  end
  return ttl, lease, channel, owner
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then
  for _, gone in ipairs(expired) do redis.call('HDEL', KEYS[2], gone) end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end

local mine = redis.call('ZSCORE', KEYS[1], ARGV[1])
if mine then
  local info = redis.call('HGET', KEYS[2], ARGV[1]) or ''
  return {1, tonumber(string.match(info, '^([^\n]*)')) or 0, tonumber(mine) - now}
end
redis.call('LREM', KEYS[4], 0, ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])

local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
while free > 0 do
  local head = redis.call('LPOP', KEYS[4])
  if not head then break end
  local entry = redis.call('HGET', KEYS[5], head)
  redis.call('HDEL', KEYS[5], head)
  local ttl, lease, channel, owner
  if entry then ttl, lease, channel, owner = claim(entry) end
  if tonumber(lease) and tonumber(lease) > now and tonumber(ttl) then
    local fence = redis.call('INCR', KEYS[3])
    redis.call('ZADD', KEYS[1], now + tonumber(ttl), head)
    redis.call('HSET', KEYS[2], head, fence .. '\n' .. now .. '\n' .. owner)
    redis.call('PUBLISH', channel, head .. '\n' .. fence .. '\n' .. now .. '\n' .. ttl)
    free = free - 1
  end
end
return {0}
