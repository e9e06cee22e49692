-- The first part of release.lua: its common path, run before any helper from lib/ is defined,
-- so the common call pays for no closures it does not use.
--
-- GETDEL the key; nothing there: 0. Our token's hold without the waiters mark ("+w" ending the
-- third field, lib/mutex_value.lua; the same tests as lib/lock_value.lua's held_by and
-- lib/mutex_value.lua's is_marked): released, 1. Anything else (another token's hold, to be
-- put back; our hold with waiters, to be handed off) falls through to release.lua with the
-- value taken in `value`.
--
-- KEYS, ARGV and Returns: release.lua's.
local value = redis.call('GETDEL', KEYS[1])
if not value then
  return 0
end
if string.sub(value, 1, #ARGV[1] + 1) == ARGV[1] .. '\n'
    and not string.find(value, '+w\n', 1, true) then
  return 1
end
