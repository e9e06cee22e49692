-- Helper (prepended at build time): the wait queue of the leased primitives (fair lock,
-- semaphore, read/write lock): a list of tokens (oldest first) beside a hash
-- token -> "ttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner" ("mode\n" in front for the
-- read/write lock).
--
-- Expects in scope: is_live (lib/handoff.lua).
-- Returns: claim(entry) -> ttl, lease_expires, channel, owner: the TTL the waiter is handed the
--                hold with is its TTL but no longer than its lease (a waiter that died just
--                before the hand-off keeps the hold one lease at most; a live one extends it at
--                once); all nil when the entry is malformed
--          claim_with_mode(entry) -> mode, then what claim returns (all nil when malformed)
--          pop_live_waiter(queue, waiters, now, caller) -> head, ttl, channel, owner of the
--                oldest waiter that is live or is `caller` (popped, its entry deleted), dropping
--                dead ones before it; nil when the queue ran out
--          enqueue(queue, waiters, token, entry) -> queues `token` at the back unless it already
--                has an entry, then (re)writes its entry (renewing its lease)
local function claim(entry)
  local ttl, lease, span, channel, owner =
    string.match(entry, '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
  if tonumber(ttl) and tonumber(span) then
    ttl = tostring(math.min(tonumber(ttl), tonumber(span)))
  end
  return ttl, lease, channel, owner
end

local function claim_with_mode(entry)
  local mode, rest = string.match(entry, '^([^\n]*)\n(.*)$')
  if not mode then return nil end
  local ttl, lease, channel, owner = claim(rest)
  if not lease then return nil end
  return mode, ttl, lease, channel, owner
end

local function pop_live_waiter(queue, waiters, now, caller)
  while true do
    local head = redis.call('LPOP', queue)
    if not head then return nil end
    local entry = redis.call('HGET', waiters, head)
    redis.call('HDEL', waiters, head)
    local ttl, lease, channel, owner
    if entry then ttl, lease, channel, owner = claim(entry) end
    if head == caller or is_live(ttl, lease, now) then
      return head, ttl, channel, owner
    end
  end
end

local function enqueue(queue, waiters, token, entry)
  if redis.call('HEXISTS', waiters, token) == 0 then
    redis.call('RPUSH', queue, token)
  end
  redis.call('HSET', waiters, token, entry)
end
