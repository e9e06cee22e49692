-- Helper (prepended at build time): the Redis server's clock, never a client's.
--
-- Expects in scope: nothing.
-- Returns: server_now_ms() -> Redis TIME in whole milliseconds since the Unix epoch.
local function server_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
