-- Takes the lock when it is free (or already ours), else optionally joins its FIFO wait queue.
--
-- The lock value is "token\nfence\nsince_ms\nowner": the holder's token, its fencing token, the
-- server time it was granted (Redis TIME, never a client clock) and an owner description (JSON).
-- A queue entry is "token\nttl_ms\nexpires_ms\nchannel\nowner"; release.lua hands the lock to
-- the oldest entry that has not expired and announces it on the entry's channel (the waiting
-- client's own, so only that process wakes up).
--
-- KEYS[1]: lock key       (string, PX ttl)
-- KEYS[2]: fence counter  (integer, never expires)
-- KEYS[3]: wait queue     (list, oldest first)
-- ARGV[1]: token (the caller's UUID)
-- ARGV[2]: ttl in milliseconds (> 0)
-- ARGV[3]: owner description (JSON, one line)
-- ARGV[4]: how long to stay queued in ms; "0" = do not queue
-- ARGV[5]: the caller's queue entry from an earlier call, or "" when it has none
-- ARGV[6]: the caller's hand-off channel (used when it joins the queue)
-- Returns: {1, fence, pttl_ms, server_ms}  acquired, or already ours (a retried call, a hand-off
--                                          whose message was missed): fence is the held token
--          {0, pttl_ms, server_ms, entry}  held by another; entry is the caller's queue entry
--                                          ("" when not queued)
local token = ARGV[1]
local value = redis.call('GET', KEYS[1])

if value then
  if held_by(value, token) then
    return {1, fence_of(value), redis.call('PTTL', KEYS[1]), server_now_ms()}
  end
  local now = server_now_ms()
  local entry = ARGV[5]
  if ARGV[4] ~= '0' and entry == '' then
    entry = token .. '\n' .. ARGV[2] .. '\n' .. (now + tonumber(ARGV[4])) .. '\n' .. ARGV[6] .. '\n' .. ARGV[3]
    redis.call('RPUSH', KEYS[3], entry)
  end
  return {0, redis.call('PTTL', KEYS[1]), now, entry}
end

if ARGV[5] ~= '' then
  redis.call('LREM', KEYS[3], 1, ARGV[5])
end
local now = server_now_ms()
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], lock_value(token, fence, now, ARGV[3]), 'PX', ARGV[2])
return {1, fence, tonumber(ARGV[2]), now}
