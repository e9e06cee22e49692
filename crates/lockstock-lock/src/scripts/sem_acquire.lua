-- Takes a permit of a counting semaphore when one is free and no older live waiter is ahead;
-- else, when asked to, queues the caller (or renews its queue entry's lease).
--
-- Expired holders (crashed, or paused past their TTL) give their permits back first. Free
-- permits go to the oldest live waiters before the caller, each hand-off announced on that
-- waiter's own channel as "token\nfence\nserver_ms\nttl_ms"; waiters whose lease ran out (gave
-- up or died) are dropped from the head of the queue.
--
-- KEYS[1]: holders  (zset token -> expiry, Redis server time in ms)
-- KEYS[2]: owners   (hash token -> "fence\nsince_ms\nowner")
-- KEYS[3]: fence counter (integer, never expires)
-- KEYS[4]: queue    (list of waiting tokens, oldest first)
-- KEYS[5]: waiters  (hash token -> "ttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner")
-- ARGV[1]: token (the caller's UUID)
-- ARGV[2]: ttl in milliseconds (> 0)
-- ARGV[3]: owner description (JSON, one line)
-- ARGV[4]: lease in milliseconds of the caller's queue entry; "0" = do not queue
-- ARGV[5]: permits N (>= 1)
-- ARGV[6]: the caller's own hand-off channel (kept in its queue entry: a hand-off to it is
--          published there, so only its process wakes)
-- Returns: {1, fence, pttl_ms, server_ms}  the caller holds a permit (new, or handed over)
--          {0, wake_ms, server_ms}         no permit; wake_ms = ms until the earliest holder
--                                          expires (-1 when unknown)

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

local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then
  for _, gone in ipairs(expired) do redis.call('HDEL', KEYS[2], gone) end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end

local mine = redis.call('ZSCORE', KEYS[1], token)
if mine then
  local info = redis.call('HGET', KEYS[2], token) or ''
  return {1, tonumber(string.match(info, '^([^\n]*)')) or 0, tonumber(mine) - now, now}
end

local function grant(who, ttl, owner)
  local fence = redis.call('INCR', KEYS[3])
  redis.call('ZADD', KEYS[1], now + ttl, who)
  redis.call('HSET', KEYS[2], who, fence .. '\n' .. now .. '\n' .. owner)
  return fence
end

local free = tonumber(ARGV[5]) - redis.call('ZCARD', KEYS[1])
while free > 0 do
  local head = redis.call('LINDEX', KEYS[4], 0)
  if not head then break end
  local entry = redis.call('HGET', KEYS[5], head)
  local ttl, lease, channel, owner
  if entry then ttl, lease, channel, owner = claim(entry) end
  redis.call('LPOP', KEYS[4])
  redis.call('HDEL', KEYS[5], head)
  if head == token then
    return {1, grant(token, tonumber(ARGV[2]), ARGV[3]), tonumber(ARGV[2]), now}
  end
  if tonumber(lease) and tonumber(lease) > now and tonumber(ttl) then
    local fence = grant(head, tonumber(ttl), owner)
    redis.call('PUBLISH', channel, head .. '\n' .. fence .. '\n' .. now .. '\n' .. ttl)
    free = free - 1
  end
end

if free > 0 then
  redis.call('HDEL', KEYS[5], token)
  return {1, grant(token, tonumber(ARGV[2]), ARGV[3]), tonumber(ARGV[2]), now}
end

if ARGV[4] ~= '0' then
  if redis.call('HEXISTS', KEYS[5], token) == 0 then
    redis.call('RPUSH', KEYS[4], token)
  end
  redis.call('HSET', KEYS[5], token, ARGV[2] .. '\n' .. (now + tonumber(ARGV[4])) .. '\n' .. ARGV[4] .. '\n' .. ARGV[6] .. '\n' .. ARGV[3])
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wake = -1
if first[2] then wake = math.max(0, tonumber(first[2]) - now) end
return {0, wake, now}
