-- Takes the lock when it is free (or already ours), else optionally joins its FIFO wait queue or
-- renews the caller's place in it.
--
-- The lock value is "token\nfence\nsince_ms\nowner": the holder's token, its fencing token, the
-- server time it was granted (Redis TIME, never a client clock) and an owner description (JSON).
-- A queue entry is "token\nttl_ms\nexpires_ms\nchannel\nowner" (lib/mutex_queue.lua): a lease
-- the waiter renews with every call; release.lua hands the lock to the oldest entry whose lease
-- has not run out, for the entry's ttl_ms (the TTL capped by the lease), and announces it on the
-- entry's channel (the waiting client's own, so only that process wakes up). Queueing is by
-- token: a retried call (its reply lost) renews the one entry, never adds a second.
--
-- KEYS[1]: lock key       (string, PX ttl)
-- KEYS[2]: fence counter  (integer, never expires)
-- KEYS[3]: wait queue     (list, oldest first)
-- ARGV[1]: token (the caller's UUID)
-- ARGV[2]: ttl in milliseconds (> 0)
-- ARGV[3]: owner description (JSON, one line)
-- ARGV[4]: lease of the caller's queue entry in ms; "0" = do not queue
-- ARGV[5]: the caller's hand-off channel (kept in its queue entry)
-- Returns: {1, fence, pttl_ms, server_ms}  acquired, or already ours (a retried call, a hand-off
--                                          whose message was missed): fence is the held token
--          {0, pttl_ms, server_ms}         held by another (pttl_ms -1: no expiry)
local token = ARGV[1]
local value = redis.call('GET', KEYS[1])

if held_by(value, token) then
  return {1, fence_of(value), redis.call('PTTL', KEYS[1]), server_now_ms()}
end

local now = server_now_ms()
if value then
  if ARGV[4] ~= '0' then
    local lease = tonumber(ARGV[4])
    local handed_ttl = math.min(tonumber(ARGV[2]), lease)
    requeue(KEYS[3], token,
      token .. '\n' .. handed_ttl .. '\n' .. (now + lease) .. '\n' .. ARGV[5] .. '\n' .. ARGV[3])
  end
  return {0, redis.call('PTTL', KEYS[1]), now}
end

if ARGV[4] ~= '0' then
  -- Only a queueing call can have an entry (an unqueued look never did): the uncontended path
  -- stays free of the queue scan.
  leave_queue(KEYS[3], token)
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], lock_value(token, fence, now, ARGV[3]), 'PX', ARGV[2])
return {1, fence, tonumber(ARGV[2]), now}
