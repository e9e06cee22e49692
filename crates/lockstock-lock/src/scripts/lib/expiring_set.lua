-- Helper (prepended at build time): holders kept in an expiring set (semaphore permits, readers
-- of a read/write lock): a zset token -> expiry (server ms) beside a hash
-- token -> "fence\nsince_ms\nowner".
--
-- Expects in scope: nothing.
-- Returns: drop_expired(set, owners, now) -> removes members whose expiry passed, and their records
--          member_hold(set, owners, token, now) -> fence, ttl_left_ms of `token`'s hold, or nil
--          add_member(set, owners, who, fence, ttl, owner, now) -> grants `who` a hold of `ttl` ms
local function drop_expired(set, owners, now)
  local expired = redis.call('ZRANGEBYSCORE', set, '-inf', now)
  if #expired > 0 then
    for _, gone in ipairs(expired) do redis.call('HDEL', owners, gone) end
    redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
  end
end

local function member_hold(set, owners, token, now)
  local mine = redis.call('ZSCORE', set, token)
  if not mine then return nil end
  local info = redis.call('HGET', owners, token) or ''
  return tonumber(string.match(info, '^([^\n]*)')) or 0, tonumber(mine) - now
end

local function add_member(set, owners, who, fence, ttl, owner, now)
  redis.call('ZADD', set, now + tonumber(ttl), who)
  redis.call('HSET', owners, who, fence .. '\n' .. now .. '\n' .. owner)
end
