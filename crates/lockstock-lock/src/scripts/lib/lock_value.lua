-- Helper (prepended at build time): the stored value of an exclusive hold (mutex, fair lock,
-- writer of a read/write lock, Redlock), "token\nfence\nsince_ms\nowner". The Rust side reads it
-- back with one parser (`HoldRecord` in `inspect.rs`).
--
-- Expects in scope: nothing.
-- Returns: held_by(value, token)  -> truthy when `value` (a GET reply, false when missing) is
--                                    `token`'s hold
--          fence_of(value)        -> the fencing token written in `value` (nil when malformed)
--          lock_value(who, fence, since_ms, owner) -> the value to SET for `who`
local function held_by(value, token)
  return value and string.sub(value, 1, #token + 1) == token .. '\n'
end

local function fence_of(value)
  return tonumber(string.match(value, '^[^\n]*\n([^\n]*)'))
end

local function lock_value(who, fence, since_ms, owner)
  return who .. '\n' .. fence .. '\n' .. since_ms .. '\n' .. owner
end
