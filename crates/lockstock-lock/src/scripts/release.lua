-- Releases the lock if the caller still holds it, handing it straight to the oldest live waiter.
--
-- A hand-off sets the lock to the waiter's token with a fresh fencing token and the TTL from its
-- entry (its TTL capped by its lease: a waiter that died queued holds it one lease at most),
-- then publishes "token\nfence\nserver_ms\nttl_ms" on the waiter's own channel (from its queue
-- entry, see acquire.lua); the waiter owns the lock from that moment without another round trip.
-- Entries whose lease ran out (waiters that gave up or died) are skipped.
--
-- KEYS[1]: lock key
-- KEYS[2]: fence counter
-- KEYS[3]: wait queue
-- ARGV[1]: token of the caller
-- Returns: 1 released (nobody waiting), 2 handed to the next waiter,
--          0 not released: the lock is gone (expired) or held by another token
local token = ARGV[1]
local value = redis.call('GET', KEYS[1])
if not held_by(value, token) then
  return 0
end

local now = nil
while true do
  local entry = redis.call('LPOP', KEYS[3])
  if not entry then
    redis.call('DEL', KEYS[1])
    return 1
  end
  local waiter, ttl, expires, channel, owner =
    string.match(entry, '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
  if not now then
    now = server_now_ms()
  end
  if waiter and is_live(ttl, expires, now) then
    hand_over(KEYS[1], KEYS[2], waiter, owner, ttl, channel, now)
    return 2
  end
end
