-- Releases the lock if the caller still holds it, handing it straight to the oldest live waiter
-- when the hold carries the waiters mark (lib/mutex_value.lua).
--
-- The key is taken with GETDEL (release_fast.lua, prepended before the helpers): a hold without the mark (nobody queued behind it) is released
-- by that one command. When GETDEL returns another token's hold (ours expired and was taken),
-- it is put back at once in this same script (no other command runs in between) with the TTL
-- it was last set with, which is at least what it had left: its holder's safety deadline was
-- counted from that TTL, so the key living a little *longer* than its holder believes only
-- delays the next grant, never lets two guards be valid at once.
--
-- A hand-off sets the lock to the waiter's token with a fresh fencing token and the TTL from its
-- entry (its TTL capped by its lease: a waiter that died queued holds it one lease at most),
-- marked (others may be queued behind it), then publishes "token\nfence\nserver_ms\nttl_ms" on
-- the waiter's own channel (from its queue entry, see acquire.lua); the waiter owns the lock
-- from that moment without another round trip. Entries whose lease ran out (waiters that gave
-- up or died) are skipped.
--
-- KEYS[1]: lock key
-- KEYS[2]: fence counter
-- KEYS[3]: wait queue
-- ARGV[1]: token of the caller
-- ARGV[2]: the caller's ttl in ms (restores a foreign value of an unknown shape)
-- Returns: 1 released (nobody waiting), 2 handed to the next waiter,
--          0 not released: the lock is gone (expired) or held by another token
local token = ARGV[1]
-- release_fast.lua ran first: `value` is what GETDEL took, present, and not an unmarked hold of
-- ours, so it is another token's hold or our hold with the waiters mark.
if not held_by(value, token) then
  redis.call('SET', KEYS[1], value, 'PX', set_ttl_of(value) or ARGV[2])
  return 0
end

local now = nil
while true do
  local entry = redis.call('LPOP', KEYS[3])
  if not entry then
    return 1
  end
  local waiter, ttl, expires, channel, owner =
    string.match(entry, '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
  if not now then
    now = server_now_ms()
  end
  if waiter and is_live(ttl, expires, now) then
    hand_over_value(KEYS[1], KEYS[2], waiter, ttl, channel, now, function(fence)
      return mutex_value(waiter, fence, ttl, 0, true, owner)
    end)
    return 2
  end
end
