-- Helper (prepended at build time): the stored value of a held mutex,
-- "token\nfence\nttl_ms+held_ms[+w]\nowner". No server clock is read to write it: the third
-- field says the key was last set with a TTL of `ttl_ms` after the hold had lasted `held_ms`
-- (0 at a grant; an extension adds what passed since), so inspection derives "since" from the
-- key's PTTL and one TIME (`inspect.rs`), and a release that must put a foreign value back
-- knows the TTL it was set with. "+w" marks a hold with waiters queued behind it: only then
-- does its release look at the queue. Every call that queues a waiter behind a hold marks it,
-- a hand-off marks the new hold, and a queueing call that takes a free lock marks it when
-- others are still queued; a free lock taken by an unqueued call (try_acquire, a first look)
-- while waiters are queued is not marked until a waiter's next attempt marks it.
--
-- Expects in scope: nothing.
-- Returns: mutex_value(who, fence, ttl_ms, held_ms, marked, owner) -> the value to SET
--          is_marked(value)   -> truthy when `value` carries the waiters mark
--          with_mark(value)   -> `value` with the waiters mark (unchanged when it has one or
--                                is not a mutex value)
--          set_ttl_of(value)  -> ttl_ms, held_ms of `value` (nil when not a mutex value)
--          reheld(value, ttl_ms, held_ms) -> `value` set again with `ttl_ms` after `held_ms`,
--                                keeping its token, fence, mark and owner (nil when not a
--                                mutex value)
local function mutex_value(who, fence, ttl_ms, held_ms, marked, owner)
  return who .. '\n' .. fence .. '\n' .. ttl_ms .. '+' .. held_ms .. (marked and '+w' or '')
    .. '\n' .. owner
end

local function split_mutex_value(value)
  return string.match(value, '^([^\n]*\n[^\n]*\n)(%d+)%+(%d+)(%+?w?)(\n.*)$')
end

local function is_marked(value)
  -- A plain search: only the third field can end in "+w" before a newline (the token is a
  -- UUID, the fence digits, the owner one line of JSON at the end), and release runs this on
  -- every call, so it builds no captures.
  return string.find(value, '+w\n', 1, true) ~= nil
end

local function with_mark(value)
  local head, ttl, held, mark, owner = split_mutex_value(value)
  if not head or mark == '+w' then
    return value
  end
  return head .. ttl .. '+' .. held .. '+w' .. owner
end

local function set_ttl_of(value)
  local _, ttl, held = split_mutex_value(value)
  return tonumber(ttl), tonumber(held)
end

local function reheld(value, ttl_ms, held_ms)
  local head, _, _, mark, owner = split_mutex_value(value)
  if not head then
    return nil
  end
  return head .. ttl_ms .. '+' .. held_ms .. mark .. owner
end
