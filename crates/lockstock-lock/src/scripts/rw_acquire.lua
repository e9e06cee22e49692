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
local now = server_now_ms()
local token, mode = ARGV[1], ARGV[2]

drop_expired(KEYS[2], KEYS[3], now)

local writer = redis.call('GET', KEYS[1])
if mode == 'w' and held_by(writer, token) then
  return {1, fence_of(writer), redis.call('PTTL', KEYS[1]), now}
end
if mode == 'r' then
  local fence, left = member_hold(KEYS[2], KEYS[3], token, now)
  if fence then
    return {1, fence, left, now}
  end
end

local new_writer, _, granted = rw_grant_waiters(now, writer, token, mode, ARGV[3], ARGV[4])
writer = new_writer
if granted then
  return {1, granted, tonumber(ARGV[3]), now}
end

if not redis.call('LINDEX', KEYS[5], 0) then
  if not writer and (mode == 'r' or redis.call('ZCARD', KEYS[2]) == 0) then
    redis.call('HDEL', KEYS[6], token)
    return {1, rw_grant(token, mode, ARGV[3], ARGV[4], now), tonumber(ARGV[3]), now}
  end
end

if ARGV[5] ~= '0' then
  enqueue(KEYS[5], KEYS[6], token, mode .. '\n' .. ARGV[3] .. '\n' .. (now + tonumber(ARGV[5])) .. '\n' .. ARGV[5] .. '\n' .. ARGV[6] .. '\n' .. ARGV[4])
end
local wake = -1
if writer then
  wake = math.max(0, redis.call('PTTL', KEYS[1]))
else
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  if last[2] then wake = math.max(0, tonumber(last[2]) - now) end
end
return {0, wake, now}
