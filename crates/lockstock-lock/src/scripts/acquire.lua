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
-- An unqueued call (the uncontended path; acquire_fast.lua, prepended before the helpers, runs it
-- when unobserved) takes the fence (INCR) before the SET NX GET that
-- grants: the grant and its fence stay one atomic script, and an unqueued call that finds the
-- lock held burns a number (fences stay strictly increasing in grant order, with gaps). Cost:
-- INCR + SET (3 commands with EVALSHA). A queueing call (its process is waiting on this
-- resource: contention is expected) reads the lock first and takes a fence only to grant.
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
-- Returns: fence                 acquired by acquire_fast.lua (an unqueued, unobserved call
--                                 that found the lock free), for ARGV[2] ms
--          {1, fence, pttl_ms[, server_ms]}  acquired, or already ours (a retried call, a
--                                 hand-off whose message was missed): fence is the held token;
--                                 server_ms only when ARGV[6] is "1"
--          {0, pttl_ms, server_ms} held by another (pttl_ms -1: no expiry)
local token = ARGV[1]
local with_time = ARGV[6] == '1'

local function granted(fence, pttl)
  if with_time then
    return {1, fence, pttl, server_now_ms()}
  end
  return {1, fence, pttl}
end

if ARGV[4] == '0' then
  -- acquire_fast.lua ran first: when it took the fence and found the key held, the value is in
  -- `unqueued_found`; an observed call (ARGV[6] "1") takes them here.
  local value = unqueued_found
  if value == nil then
    local fence = redis.call('INCR', KEYS[2])
    value = redis.call('SET', KEYS[1],
      mutex_value(token, fence, ARGV[2], 0, false, ARGV[3]), 'NX', 'PX', ARGV[2], 'GET')
    if not value then
      return granted(fence, tonumber(ARGV[2]))
    end
  end
  if held_by(value, token) then
    return granted(fence_of(value), redis.call('PTTL', KEYS[1]))
  end
  return {0, redis.call('PTTL', KEYS[1]), server_now_ms()}
end

local value = redis.call('GET', KEYS[1])
if held_by(value, token) then
  return granted(fence_of(value), redis.call('PTTL', KEYS[1]))
end

if not value then
  -- Free: take it, leave the queue, and mark the hold when others are still queued behind it.
  local index, entry, queued = find_entry(KEYS[3], token)
  if index then
    redis.call('LREM', KEYS[3], 1, entry)
  end
  local fence = redis.call('INCR', KEYS[2])
  local others = queued - (index and 1 or 0) > 0
  redis.call('SET', KEYS[1], mutex_value(token, fence, ARGV[2], 0, others, ARGV[3]), 'PX', ARGV[2])
  return granted(fence, tonumber(ARGV[2]))
end

local now = server_now_ms()
local lease = tonumber(ARGV[4])
local handed_ttl = math.min(tonumber(ARGV[2]), lease)
requeue(KEYS[3], token,
  token .. '\n' .. handed_ttl .. '\n' .. (now + lease) .. '\n' .. ARGV[5] .. '\n' .. ARGV[3])
if not is_marked(value) then
  redis.call('SET', KEYS[1], with_mark(value), 'XX', 'KEEPTTL')
end
return {0, redis.call('PTTL', KEYS[1]), now}
