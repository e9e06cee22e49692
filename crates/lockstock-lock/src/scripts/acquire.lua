-- Takes the lock when it is free (or already ours), else optionally joins its FIFO wait queue or
-- renews the caller's place in it.
--
-- The lock value is "token\nfence\nttl_ms+held_ms[+w]\nowner" (lib/mutex_value.lua): the
-- holder's token, its fencing token, the TTL the key was set with and how long the hold had
-- lasted then, the waiters mark, and an owner description (JSON). No TIME is read on the free
-- path: inspection derives "since" from PTTL.
-- A queue entry is "token\nttl_ms\nexpires_ms\nchannel\nowner" (lib/mutex_queue.lua): a lease
-- the waiter renews with every call; release.lua hands the lock to the oldest entry whose lease
-- has not run out, for the entry's ttl_ms (the TTL capped by the lease), and announces it on the
-- entry's channel (the waiting client's own, so only that process wakes up). Queueing is by
-- token: a retried call (its reply lost) renews the one entry, never adds a second. A queueing
-- call marks the holder's value ("+w"), so its release hands off; see lib/mutex_value.lua for
-- when a hold with waiters is not marked.
--
-- The fence is taken (INCR) before the SET NX that grants: the grant and its fence stay one
-- atomic script, and a call that finds the lock held burns a number. Fences stay strictly
-- increasing in grant order, with gaps. Uncontended cost: INCR + SET (3 commands with EVALSHA).
--
-- KEYS[1]: lock key       (string, PX ttl)
-- KEYS[2]: fence counter  (integer, never expires)
-- KEYS[3]: wait queue     (list, oldest first)
-- ARGV[1]: token (the caller's UUID)
-- ARGV[2]: ttl in milliseconds (> 0)
-- ARGV[3]: owner description (JSON, one line)
-- ARGV[4]: lease of the caller's queue entry in ms; "0" = do not queue
-- ARGV[5]: the caller's hand-off channel (kept in its queue entry)
-- ARGV[6]: "1" = also return the server time of a grant (an observer is attached), else "0"
-- Returns: {1, fence, pttl_ms[, server_ms]}  acquired, or already ours (a retried call, a
--                                 hand-off whose message was missed): fence is the held token;
--                                 server_ms only when ARGV[6] is "1"
--          {0, pttl_ms, server_ms} held by another (pttl_ms -1: no expiry)
local token = ARGV[1]
local queueing = ARGV[4] ~= '0'

-- Only a queueing call can have an entry (an unqueued look never did): the uncontended path
-- stays free of the queue scan.
local index, entry, queued = nil, nil, 0
if queueing then
  index, entry, queued = find_entry(KEYS[3], token)
end
local others_queued = queued - (index and 1 or 0) > 0

local fence = redis.call('INCR', KEYS[2])
local value = redis.call('SET', KEYS[1],
  mutex_value(token, fence, ARGV[2], 0, others_queued, ARGV[3]), 'NX', 'PX', ARGV[2], 'GET')
if not value then
  if index then
    redis.call('LREM', KEYS[3], 1, entry)
  end
  if ARGV[6] == '1' then
    return {1, fence, tonumber(ARGV[2]), server_now_ms()}
  end
  return {1, fence, tonumber(ARGV[2])}
end

if held_by(value, token) then
  if ARGV[6] == '1' then
    return {1, fence_of(value), redis.call('PTTL', KEYS[1]), server_now_ms()}
  end
  return {1, fence_of(value), redis.call('PTTL', KEYS[1])}
end

local now = server_now_ms()
if queueing then
  local lease = tonumber(ARGV[4])
  local handed_ttl = math.min(tonumber(ARGV[2]), lease)
  requeue(KEYS[3], token,
    token .. '\n' .. handed_ttl .. '\n' .. (now + lease) .. '\n' .. ARGV[5] .. '\n' .. ARGV[3])
  if not is_marked(value) then
    redis.call('SET', KEYS[1], with_mark(value), 'XX', 'KEEPTTL')
  end
end
return {0, redis.call('PTTL', KEYS[1]), now}
