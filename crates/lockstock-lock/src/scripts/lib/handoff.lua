-- Helper (prepended at build time): handing a hold to a waiter, announced on the waiter's own
-- hand-off channel as "token\nfence\nserver_ms\nttl_ms" (parsed by `notify.rs`).
--
-- Expects in scope: lock_value (lib/lock_value.lua).
-- Returns: is_live(ttl, lease_expires, now) -> truthy when a waiter entry's lease has not run
--                                              out and its TTL is a number
--          announce(channel, who, fence, now, ttl) -> publishes the hand-off message
--          hand_over(lock, counter, who, owner, ttl, channel, now) -> the new fencing token, after
--                                              setting `lock` to `who` (PX ttl) and announcing it
--          hand_over_value(lock, counter, who, ttl, channel, now, value_of) -> the same, with the
--                                              stored value built by `value_of(fence)` (the mutex's
--                                              own shape, lib/mutex_value.lua)
local function is_live(ttl, lease_expires, now)
  return tonumber(lease_expires) and tonumber(lease_expires) > now and tonumber(ttl)
end

local function announce(channel, who, fence, now, ttl)
  redis.call('PUBLISH', channel, who .. '\n' .. fence .. '\n' .. now .. '\n' .. ttl)
end

local function hand_over_value(lock, counter, who, ttl, channel, now, value_of)
  local fence = redis.call('INCR', counter)
  redis.call('SET', lock, value_of(fence), 'PX', ttl)
  announce(channel, who, fence, now, ttl)
  return fence
end

local function hand_over(lock, counter, who, owner, ttl, channel, now)
  return hand_over_value(lock, counter, who, ttl, channel, now, function(fence)
    return lock_value(who, fence, now, owner)
  end)
end
