-- Helper (prepended at build time): the mutex's wait queue, a list of entries
-- "token\nttl_ms\nexpires_ms\nchannel\nowner", oldest first, at most one per token. `ttl_ms` is
-- the TTL a hand-off grants the waiter: its TTL capped by its lease, so a waiter that died
-- queued keeps a handed lock one lease at most; a live one extends it to its full TTL at once.
-- `expires_ms` is the end of the entry's lease (server time), renewed by the waiter's next call.
--
-- Expects in scope: nothing.
-- Returns: find_entry(queue, token) -> index (0-based), entry of `token`'s entry (nil, nil when
--                it has none), and the number of entries in the queue
--          requeue(queue, token, entry) -> replaces `token`'s entry in place (keeping its place
--                in line), or appends `entry` when it has none: idempotent for a retried call
--          leave_queue(queue, token) -> removes `token`'s entry, if any
local function find_entry(queue, token)
  local prefix = token .. '\n'
  local entries = redis.call('LRANGE', queue, 0, -1)
  for i, entry in ipairs(entries) do
    if string.sub(entry, 1, #prefix) == prefix then
      return i - 1, entry, #entries
    end
  end
  return nil, nil, #entries
end

local function requeue(queue, token, entry)
  local index = find_entry(queue, token)
  if index then
    redis.call('LSET', queue, index, entry)
  else
    redis.call('RPUSH', queue, entry)
  end
end

local function leave_queue(queue, token)
  local index, entry = find_entry(queue, token)
  if index then
    redis.call('LREM', queue, 1, entry)
  end
end
