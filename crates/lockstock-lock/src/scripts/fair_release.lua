-- Releases a fair lock if the caller still holds it, handing it straight to the oldest live
-- waiter (announced on that waiter's own channel as "token\nfence\nserver_ms\nttl_ms").
-- Waiters whose lease ran out are skipped.
--
-- KEYS[1]: lock key      (string "token\nfence\nsince_ms\nowner", PX ttl)
-- KEYS[2]: fence counter
-- KEYS[3]: queue         (list of waiting tokens, oldest first)
-- KEYS[4]: waiters       (hash token -> "ttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner")
-- ARGV[1]: token of the caller
-- Returns: 1 released (nobody waiting), 2 handed to the next waiter,
--          0 not released: the lock is gone (expired) or held by another token

-- A waiter's entry -> the TTL it is handed the hold with (its TTL, but no longer than its
-- lease: a waiter that died just before the hand-off keeps the hold one lease at most; a live
-- one extends it at once), its lease expiry, its client's hand-off channel, its owner.
local function claim(entry)
  local ttl, lease, span, channel, owner =
    string.match(entry, '^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$')
  if tonumber(ttl) and tonumber(span) then
    ttl = tostring(math.min(tonumber(ttl), tonumber(span)))
  end
  return ttl, lease, channel, owner
end

local token = ARGV[1]
local value = redis.call('GET', KEYS[1])
if not value or string.sub(value, 1, #token + 1) ~= token .. '\n' then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
while true do
  local head = redis.call('LPOP', KEYS[3])
  if not head then
    redis.call('DEL', KEYS[1])
    return 1
  end
  local entry = redis.call('HGET', KEYS[4], head)
  redis.call('HDEL', KEYS[4], head)
  local ttl, lease, channel, owner
  if entry then ttl, lease, channel, owner = claim(entry) end
  if tonumber(lease) and tonumber(lease) > now and tonumber(ttl) then
    local fence = redis.call('INCR', KEYS[2])
    redis.call('SET', KEYS[1], head .. '\n' .. fence .. '\n' .. now .. '\n' .. owner, 'PX', ttl)
    redis.call('PUBLISH', channel, head .. '\n' .. fence .. '\n' .. now .. '\n' .. ttl)
    return 2
  end
end
