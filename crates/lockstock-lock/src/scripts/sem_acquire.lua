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
local now = server_now_ms()
local token = ARGV[1]

drop_expired(KEYS[1], KEYS[2], now)

local fence, left = member_hold(KEYS[1], KEYS[2], token, now)
if fence then
  return {1, fence, left, now}
end

local function grant(who, ttl, owner)
  local granted = redis.call('INCR', KEYS[3])
  add_member(KEYS[1], KEYS[2], who, granted, ttl, owner, now)
  return granted
end

local free = tonumber(ARGV[5]) - redis.call('ZCARD', KEYS[1])
while free > 0 do
  local head, ttl, channel, owner = pop_live_waiter(KEYS[4], KEYS[5], now, token)
  if not head then break end
  if head == token then
    return {1, grant(token, tonumber(ARGV[2]), ARGV[3]), tonumber(ARGV[2]), now}
  end
  announce(channel, head, grant(head, tonumber(ttl), owner), now, ttl)
  free = free - 1
end

if free > 0 then
  redis.call('HDEL', KEYS[5], token)
  return {1, grant(token, tonumber(ARGV[2]), ARGV[3]), tonumber(ARGV[2]), now}
end

if ARGV[4] ~= '0' then
  enqueue(KEYS[4], KEYS[5], token, ARGV[2] .. '\n' .. (now + tonumber(ARGV[4])) .. '\n' .. ARGV[4] .. '\n' .. ARGV[6] .. '\n' .. ARGV[3])
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wake = -1
if first[2] then wake = math.max(0, tonumber(first[2]) - now) end
return {0, wake, now}
