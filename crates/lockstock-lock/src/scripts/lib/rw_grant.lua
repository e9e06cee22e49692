-- Helper (prepended at build time): granting read/write holds in queue order.
--
-- Expects in scope: the rw_*.lua key layout (KEYS[1] writer, KEYS[2] readers, KEYS[3] owners,
--   KEYS[4] fence counter, KEYS[5] queue, KEYS[6] waiters); lock_value, announce, is_live,
--   claim_with_mode, add_member (lib/lock_value.lua, lib/handoff.lua, lib/waiters.lua,
--   lib/expiring_set.lua).
-- Returns: rw_grant(who, mode, ttl, owner, now) -> the new fencing token, after granting `who`
--                the write hold ("w") or a read hold ("r") for `ttl` ms
--          rw_grant_waiters(now, writer, caller, mode, ttl, owner) -> writer, handed, fence:
--                grants the oldest live waiters while they fit (a run of readers together, a
--                writer alone; dead waiters at the head are dropped), announcing each; `caller`
--                (nil for none) is granted with its own mode/ttl/owner and stops the run.
--                `writer` is the writer after the grants (false when none), `handed` how many
--                other waiters were granted, `fence` the caller's token when it was granted.
local function rw_grant(who, mode, ttl, owner, now)
  local fence = redis.call('INCR', KEYS[4])
  if mode == 'w' then
    redis.call('SET', KEYS[1], lock_value(who, fence, now, owner), 'PX', ttl)
  else
    add_member(KEYS[2], KEYS[3], who, fence, ttl, owner, now)
  end
  return fence
end

local function rw_grant_waiters(now, writer, caller, caller_mode, caller_ttl, caller_owner)
  local handed = 0
  while true do
    local head = redis.call('LINDEX', KEYS[5], 0)
    if not head then break end
    local entry = redis.call('HGET', KEYS[6], head)
    local m, ttl, lease, channel, owner
    if entry then m, ttl, lease, channel, owner = claim_with_mode(entry) end
    if not (head == caller or is_live(ttl, lease, now)) then
      redis.call('LPOP', KEYS[5])
      redis.call('HDEL', KEYS[6], head)
    else
      if head == caller then m, ttl, owner = caller_mode, caller_ttl, caller_owner end
      local fits
      if m == 'w' then
        fits = not writer and redis.call('ZCARD', KEYS[2]) == 0
      else
        fits = not writer
      end
      if not fits then break end
      redis.call('LPOP', KEYS[5])
      redis.call('HDEL', KEYS[6], head)
      local fence = rw_grant(head, m, ttl, owner, now)
      if m == 'w' then writer = head end
      if head == caller then return writer, handed, fence end
      announce(channel, head, fence, now, ttl)
      handed = handed + 1
    end
  end
  return writer, handed, nil
end
