-- Moves every dead letter's original payload back to the pending list, atomically.
-- KEYS[1]: the dead letter list (entries are JSON objects with a string "payload")
-- KEYS[2]: the pending list
-- Returns: {requeued, kept}: how many payloads went back to the queue (oldest first, at the back),
--          and how many entries could not be read and stay in the dead letter list, in order.
local entries = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
local requeued, kept = 0, 0
-- Entries were LPUSHed, so the oldest is last.
for i = #entries, 1, -1 do
  local ok, entry = pcall(cjson.decode, entries[i])
  if ok and type(entry) == 'table' and type(entry.payload) == 'string' then
    redis.call('LPUSH', KEYS[2], entry.payload)
    requeued = requeued + 1
  else
    redis.call('LPUSH', KEYS[1], entries[i])
    kept = kept + 1
  end
end
return {requeued, kept}
