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
local now = server_now_ms()
local token = ARGV[1]
local value = redis.call('GET', KEYS[1])

if held_by(value, token) then
  return {1, fence_of(value), redis.call('PTTL', KEYS[1]), now}
end

if not value then
  local head, ttl, channel, owner = pop_live_waiter(KEYS[3], KEYS[4], now, token)
  if head and head ~= token then
    hand_over(KEYS[1], KEYS[2], head, owner, ttl, channel, now)
  else
    if not head then redis.call('HDEL', KEYS[4], token) end
    local fence = redis.call('INCR', KEYS[2])
    redis.call('SET', KEYS[1], lock_value(token, fence, now, ARGV[3]), 'PX', ARGV[2])
    return {1, fence, tonumber(ARGV[2]), now}
  end
end

if ARGV[4] ~= '0' then
  enqueue(KEYS[3], KEYS[4], token, ARGV[2] .. '\n' .. (now + tonumber(ARGV[4])) .. '\n' .. ARGV[4] .. '\n' .. ARGV[5] .. '\n' .. ARGV[3])
end
return {0, math.max(-1, redis.call('PTTL', KEYS[1])), now}
