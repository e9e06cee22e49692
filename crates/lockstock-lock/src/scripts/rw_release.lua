-- Releases a read or write hold if the caller still has it, then grants the oldest live
-- waiters that fit (a run of readers at the head together; a writer alone), each hand-off
-- announced on that waiter's own channel as "token\nfence\nserver_ms\nttl_ms".
--
-- KEYS[1]: writer   (string "token\nfence\nsince_ms\nowner", PX ttl)
-- KEYS[2]: readers  (zset token -> expiry ms)
-- KEYS[3]: owners   (hash reader token -> "fence\nsince_ms\nowner")
-- KEYS[4]: fence counter
-- KEYS[5]: queue    (list of waiting tokens, oldest first)
-- KEYS[6]: waiters  (hash token -> "mode\nttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner")
-- ARGV[1]: token of the caller
-- ARGV[2]: mode held: "r" or "w"
-- Returns: 1 released, nobody granted; 2 released and waiters granted;
--          0 not held (expired or taken): nothing changed for the caller

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
if ARGV[2] == 'w' then
  if not writer or string.sub(writer, 1, #token + 1) ~= token .. '\n' then
    return 0
  end
  redis.call('DEL', KEYS[1])
  writer = false
else
  if redis.call('ZREM', KEYS[2], token) == 0 then
    return 0
  end
  redis.call('HDEL', KEYS[3], token)
end

local handed = 0
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
    handed = handed + 1
  end
end
if handed > 0 then return 2 end
return 1
