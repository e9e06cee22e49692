-- Helper (prepended at build time): the semaphore's hand-off of free permits.
--
-- Expects in scope: the sem_release.lua / sem_cancel.lua key and argument layout (KEYS[1]
--   holders, KEYS[2] owners, KEYS[3] fence counter, KEYS[4] queue, KEYS[5] waiters, ARGV[2]
--   permits N); pop_live_waiter, add_member, announce (lib/waiters.lua, lib/expiring_set.lua,
--   lib/handoff.lua).
-- Returns: hand_free_permits(now) -> how many permits went to the oldest live waiters, each
--          announced on its own channel (dead waiters at the head are dropped)
local function hand_free_permits(now)
  local handed = 0
  local free = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[1])
  while free > 0 do
    local head, ttl, channel, owner = pop_live_waiter(KEYS[4], KEYS[5], now, nil)
    if not head then break end
    local fence = redis.call('INCR', KEYS[3])
    add_member(KEYS[1], KEYS[2], head, fence, ttl, owner, now)
    announce(channel, head, fence, now, ttl)
    free = free - 1
    handed = handed + 1
  end
  return handed
end
