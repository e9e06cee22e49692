-- Moves one batch of dead letters, oldest first, back to the pending list (or drops them).
-- KEYS[1]: the dead letter list (entries are JSON objects with a string "payload")
-- KEYS[2]: the pending list
-- ARGV[1]: entries at the old end already examined and left in place by earlier batches
-- ARGV[2]: how many entries to examine in this batch
-- ARGV[3]: reason filter: '' for any, else the entry's reason must start with it
-- ARGV[4]: age filter: 0 for any, else the entry's "at" (Unix ms) must be at or before it
-- ARGV[5]: 'requeue' (push the payload onto the pending list) or 'purge' (drop the entry)
-- ARGV[6]: the most entries to move in this batch
-- Returns: {moved, kept, examined}: entries moved (or dropped); entries examined and left in
--          place (unreadable, a truncated payload when requeueing, not matching, over the
--          limit); entries examined. Requeued payloads go to the back of the queue, oldest first.
local skip = tonumber(ARGV[1])
local batch = tonumber(ARGV[2])
local reason = ARGV[3]
local cutoff = tonumber(ARGV[4])
local requeue = ARGV[5] == 'requeue'
local limit = tonumber(ARGV[6])
local entries = redis.call('LRANGE', KEYS[1], -(skip + batch), -(skip + 1))
local moved, kept = 0, 0
-- LRANGE lists head to tail; entries were LPUSHed, so the oldest is last.
for i = #entries, 1, -1 do
  local raw = entries[i]
  local ok, entry = pcall(cjson.decode, raw)
  local match = ok and type(entry) == 'table' and type(entry.payload) == 'string'
    and moved < limit
  if match and reason ~= '' then
    match = type(entry.reason) == 'string' and string.sub(entry.reason, 1, #reason) == reason
  end
  if match and cutoff > 0 then
    match = (tonumber(entry.at) or 0) <= cutoff
  end
  if match and requeue and entry.truncated == true then
    match = false
  end
  if match then
    redis.call('LREM', KEYS[1], -1, raw)
    if requeue then
      redis.call('LPUSH', KEYS[2], entry.payload)
    end
    moved = moved + 1
  else
    kept = kept + 1
  end
end
return {moved, kept, #entries}
