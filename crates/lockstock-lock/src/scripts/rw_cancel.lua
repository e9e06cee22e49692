-- A read/write lock waiter gives up: leaves the queue, unless it was granted meanwhile. The
-- oldest live waiters that fit are then granted (the caller may have been blocking them).
--
-- KEYS[1]: writer   (string "token\nfence\nsince_ms\nowner", PX ttl)
-- KEYS[2]: readers  (zset token -> expiry ms)
-- KEYS[3]: owners   (hash reader token -> "fence\nsince_ms\nowner")
-- KEYS[4]: fence counter
-- KEYS[5]: queue    (list of waiting tokens, oldest first)
-- KEYS[6]: waiters  (hash token -> "mode\nttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner")
-- ARGV[1]: token of the waiter
-- ARGV[2]: mode wanted: "r" or "w"
-- Returns: {1, fence, pttl_ms}  the waiter holds the lock after all (granted just before)
--          {0}                  not held; the waiter's queue entry is gone

-- A waiter's entry -> its mode, the TTL it is handed the hold with (its TTL, but no longer
-- than its lease: a waiter that died just before the hand-off keeps the hold one lease at most;
-- a live one extends it at once), its lease expiry, its client's hand-off channel, its owner.
local function claim(entry)
  local m, ttl, lease, span, channel, owner =
    string.match(entry, '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
  if tonumber(ttl) and tonumber(span) then
    ttl = tostring(math.min(tonumber(ttl), tonumber(span)))
  end
  return m, ttl, lease, channel, owner
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local token = ARGV[1]

local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #expired > 0 then
  for _, gone in ipairs(expired) do redis.call('HDEL', KEYS[3], gone) end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end

local writer = redis.call('GET', KEYS[1])
if ARGV[2] == 'w' and writer and string.sub(writer, 1, #token + 1) == token .. '\n' then
  return {1, tonumber(string.match(writer, '^[^\n]*\n([^\n]*)')), redis.call('PTTL', KEYS[1])}
end
if ARGV[2] == 'r' then
  local mine = redis.call('ZSCORE', KEYS[2], token)
  if mine then
    local info = redis.call('HGET', KEYS[3], token) or ''
    return {1, tonumber(string.match(info, '^([^\n]*)')) or 0, tonumber(mine) - now}
  end
end
redis.call('LREM', KEYS[5], 0, token)
redis.call('HDEL', KEYS[6], token)

while true do
  local head = redis.call('LINDEX', KEYS[5], 0)
  if not head then break end
  local entry = redis.call('HGET', KEYS[6], head)
  local m, ttl, lease, channel, owner
  if entry then m, ttl, lease, channel, owner = claim(entry) end
  if not (tonumber(lease) and tonumber(lease) > now and tonumber(ttl)) then
    redis.call('LPOP', KEYS[5])
    redis.call('HDEL', KEYS[6], head)
  else
    local fits
    if m == 'w' then
      fits = not writer and redis.call('ZCARD', KEYS[2]) == 0
    else
      fits = not writer
    end
    if not fits then break end
    redis.call('LPOP', KEYS[5])
    redis.call('HDEL', KEYS[6], head)
    local fence = redis.call('INCR', KEYS[4])
    if m == 'w' then
      redis.call('SET', KEYS[1], head .. '\n' .. fence .. '\n' .. now .. '\n' .. owner, 'PX', ttl)
      writer = head
    else
      redis.call('ZADD', KEYS[2], now + tonumber(ttl), head)
      redis.call('HSET', KEYS[3], head, fence .. '\n' .. now .. '\n' .. owner)
    end
    redis.call('PUBLISH', channel, head .. '\n' .. fence .. '\n' .. now .. '\n' .. ttl)
  end
end
return {0}
