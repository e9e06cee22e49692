-- Takes a fair lock when it is free and no older live waiter is queued; else, when asked to,
-- queues the caller (or renews its queue entry's lease). Strict FIFO: when the lock is free
-- (its holder released or expired) and live waiters are queued, it goes to the oldest of them —
-- handed over here by whoever calls, announced on that waiter's own channel as
-- "token\nfence\nserver_ms\nttl_ms" — never to a newer arrival. Waiters whose lease ran out
-- (gave up or died) are dropped from the head of the queue.
--
-- KEYS[1]: lock key      (string "token\nfence\nsince_ms\nowner", PX ttl)
-- KEYS[2]: fence counter (integer, never expires)
-- KEYS[3]: queue         (list of waiting tokens, oldest first)
-- KEYS[4]: waiters       (hash token -> "ttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner")
-- ARGV[1]: token (the caller's UUID)
-- ARGV[2]: ttl in milliseconds (> 0)
-- ARGV[3]: owner description (JSON, one line)
-- ARGV[4]: lease in milliseconds of the caller's queue entry; "0" = do not queue
-- ARGV[5]: the caller's own hand-off channel (kept in its queue entry: a hand-off to it is
--          published there, so only its process wakes)
-- Returns: {1, fence, pttl_ms, server_ms}  the caller holds the lock (new, or handed over)
--          {0, wake_ms, server_ms}         not granted; wake_ms = ms until the holder's TTL
--                                          runs out (-1 when unknown)

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
local token = ARGV[1]
local value = redis.call('GET', KEYS[1])

if value and string.sub(value, 1, #token + 1) == token .. '\n' then
  return {1, tonumber(string.match(value, '^[^\n]*\n([^\n]*)')), redis.call('PTTL', KEYS[1]), now}
end

if not value then
  while true do
    local head = redis.call('LPOP', KEYS[3])
    if not head then break end
    local entry = redis.call('HGET', KEYS[4], head)
    redis.call('HDEL', KEYS[4], head)
    local ttl, lease, channel, owner
    if entry then ttl, lease, channel, owner = claim(entry) end
    if head == token then
      local fence = redis.call('INCR', KEYS[2])
      redis.call('SET', KEYS[1], token .. '\n' .. fence .. '\n' .. now .. '\n' .. ARGV[3], 'PX', ARGV[2])
      return {1, fence, tonumber(ARGV[2]), now}
    end
    if tonumber(lease) and tonumber(lease) > now and tonumber(ttl) then
      local fence = redis.call('INCR', KEYS[2])
      redis.call('SET', KEYS[1], head .. '\n' .. fence .. '\n' .. now .. '\n' .. owner, 'PX', ttl)
      redis.call('PUBLISH', channel, head .. '\n' .. fence .. '\n' .. now .. '\n' .. ttl)
      value = head
      break
    end
  end
  if not value then
    redis.call('HDEL', KEYS[4], token)
    local fence = redis.call('INCR', KEYS[2])
    redis.call('SET', KEYS[1], token .. '\n' .. fence .. '\n' .. now .. '\n' .. ARGV[3], 'PX', ARGV[2])
    return {1, fence, tonumber(ARGV[2]), now}
  end
end

if ARGV[4] ~= '0' then
  if redis.call('HEXISTS', KEYS[4], token) == 0 then
    redis.call('RPUSH', KEYS[3], token)
  end
  redis.call('HSET', KEYS[4], token, ARGV[2] .. '\n' .. (now + tonumber(ARGV[4])) .. '\n' .. ARGV[4] .. '\n' .. ARGV[5] .. '\n' .. ARGV[3])
end
return {0, math.max(-1, redis.call('PTTL', KEYS[1])), now}
