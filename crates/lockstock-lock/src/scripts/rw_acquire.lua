-- Takes a read/write lock in the caller's mode when that mode is free and no older live waiter
-- is ahead; else, when asked to, queues the caller (or renews its queue entry's lease).
--
-- Readers share; a writer excludes readers and other writers. Expired readers (crashed, or
-- paused past their TTL) are dropped first. Then the oldest live waiters are granted while they
-- fit (a run of readers at the head together; a writer alone), each hand-off announced on that
-- waiter's own channel as "token\nfence\nserver_ms\nttl_ms". A new reader queues behind any live
-- waiter, so a waiting writer is never overtaken by readers that arrive after it.
--
-- KEYS[1]: writer   (string "token\nfence\nsince_ms\nowner", PX ttl)
-- KEYS[2]: readers  (zset token -> expiry, Redis server time in ms)
-- KEYS[3]: owners   (hash reader token -> "fence\nsince_ms\nowner")
-- KEYS[4]: fence counter (integer, never expires)
-- KEYS[5]: queue    (list of waiting tokens, oldest first)
-- KEYS[6]: waiters  (hash token -> "mode\nttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner")
-- ARGV[1]: token (the caller's UUID)
-- ARGV[2]: mode: "r" (read) or "w" (write)
-- ARGV[3]: ttl in milliseconds (> 0)
-- ARGV[4]: owner description (JSON, one line)
-- ARGV[5]: lease in milliseconds of the caller's queue entry; "0" = do not queue
-- ARGV[6]: the caller's own hand-off channel (kept in its queue entry: a hand-off to it is
--          published there, so only its process wakes)
-- Returns: {1, fence, pttl_ms, server_ms}  the caller holds the lock in its mode
--          {0, wake_ms, server_ms}         not granted; wake_ms = ms until the blocking hold
--                                          expires at the latest (-1 when unknown)

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
local token, mode = ARGV[1], ARGV[2]

local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #expired > 0 then
  for _, gone in ipairs(expired) do redis.call('HDEL', KEYS[3], gone) end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end

local writer = redis.call('GET', KEYS[1])
if mode == 'w' and writer and string.sub(writer, 1, #token + 1) == token .. '\n' then
  return {1, tonumber(string.match(writer, '^[^\n]*\n([^\n]*)')), redis.call('PTTL', KEYS[1]), now}
end
if mode == 'r' then
  local mine = redis.call('ZSCORE', KEYS[2], token)
  if mine then
    local info = redis.call('HGET', KEYS[3], token) or ''
    return {1, tonumber(string.match(info, '^([^\n]*)')) or 0, tonumber(mine) - now, now}
  end
end

local function grant(who, m, ttl, owner)
  local fence = redis.call('INCR', KEYS[4])
  if m == 'w' then
    redis.call('SET', KEYS[1], who .. '\n' .. fence .. '\n' .. now .. '\n' .. owner, 'PX', ttl)
    writer = who
  else
    redis.call('ZADD', KEYS[2], now + ttl, who)
    redis.call('HSET', KEYS[3], who, fence .. '\n' .. now .. '\n' .. owner)
  end
  return fence
end

while true do
  local head = redis.call('LINDEX', KEYS[5], 0)
  if not head then break end
  local entry = redis.call('HGET', KEYS[6], head)
  local m, ttl, lease, channel, owner
  if entry then m, ttl, lease, channel, owner = claim(entry) end
  local alive = head == token or (tonumber(lease) and tonumber(lease) > now and tonumber(ttl))
  if not alive then
    redis.call('LPOP', KEYS[5])
    redis.call('HDEL', KEYS[6], head)
  else
    if head == token then m, ttl, owner = mode, ARGV[3], ARGV[4] end
    local fits
    if m == 'w' then
      fits = not writer and redis.call('ZCARD', KEYS[2]) == 0
    else
      fits = not writer
    end
    if not fits then break end
    redis.call('LPOP', KEYS[5])
    redis.call('HDEL', KEYS[6], head)
    local fence = grant(head, m, tonumber(ttl), owner)
    if head == token then
      return {1, fence, tonumber(ttl), now}
    end
    redis.call('PUBLISH', channel, head .. '\n' .. fence .. '\n' .. now .. '\n' .. ttl)
  end
end

if not redis.call('LINDEX', KEYS[5], 0) then
  if not writer and (mode == 'r' or redis.call('ZCARD', KEYS[2]) == 0) then
    redis.call('HDEL', KEYS[6], token)
    return {1, grant(token, mode, tonumber(ARGV[3]), ARGV[4]), tonumber(ARGV[3]), now}
  end
end

if ARGV[5] ~= '0' then
  if redis.call('HEXISTS', KEYS[6], token) == 0 then
    redis.call('RPUSH', KEYS[5], token)
  end
  redis.call('HSET', KEYS[6], token, mode .. '\n' .. ARGV[3] .. '\n' .. (now + tonumber(ARGV[5])) .. '\n' .. ARGV[5] .. '\n' .. ARGV[6] .. '\n' .. ARGV[4])
end
local wake = -1
if writer then
  wake = math.max(0, redis.call('PTTL', KEYS[1]))
else
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  if last[2] then wake = math.max(0, tonumber(last[2]) - now) end
end
return {0, wake, now}
