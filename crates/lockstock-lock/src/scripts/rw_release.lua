-- Releases a read or write hold if the caller still has it, then grants the oldest live
-- waiters that fit (a run of readers at the head together; a writer alone), each hand-off
-- announced on that waiter's own channel as "token\nfence\nserver_ms\nttl_ms".
--
-- KEYS[1]: writer   (string "token\nfence\nsince_ms\nowner", PX ttl)
-- KEYS[2]: readers  (zset token -> expiry ms)
-- KEYS[3]: owners   (hash reader token -> "fence\nsince_ms\nowner")
-- KEYS[4]: fence counter
-- KEYS[5]: queue    (list of waiting tokens, oldest first)
-- KEYS[6]: waiters  (hash token -> "mode\nttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner")
-- ARGV[1]: token of the caller
-- ARGV[2]: mode held: "r" or "w"
-- Returns: 1 released, nobody granted; 2 released and waiters granted;
--          0 not held (expired or taken): nothing changed for the caller
local now = server_now_ms()
local token = ARGV[1]

drop_expired(KEYS[2], KEYS[3], now)

local writer = redis.call('GET', KEYS[1])
if ARGV[2] == 'w' then
  if not held_by(writer, token) then
    return 0
  end
  redis.call('DEL', KEYS[1])
  writer = false
else
  if redis.call('ZREM', KEYS[2], token) == 0 then
    return 0
  end
  redis.call('HDEL', KEYS[3], token)
end

local _, handed = rw_grant_waiters(now, writer, nil)
if handed > 0 then return 2 end
return 1
