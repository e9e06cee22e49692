-- Pushes back every given message that is in none of the queue's lists, atomically, and counts
-- the pushes: the recovery path for messages Redis lost (a restart without persistence) while a
-- durable record of them survived elsewhere.
-- KEYS[1]: the pending list (a restored message goes to the LPUSH end: after everything waiting)
-- KEYS[2]: the dead letter list (a dead-lettered message is not missing)
-- KEYS[3]: the counter of restored messages (INCRBY)
-- KEYS[4..]: every known processing list
-- ARGV[1]: 'check' (change nothing) or 'push'
-- ARGV[2..]: the candidate messages, byte for byte as they were pushed
-- Returns: 'check': the 1-based positions (among the candidates) of the missing ones;
--          'push': how many candidates were missing and pushed; the others changed nothing.
local present = {}
local function scan(key)
  local items = redis.call('LRANGE', key, 0, -1)
  for i = 1, #items do
    present[items[i]] = true
  end
end
scan(KEYS[1])
for k = 4, #KEYS do
  scan(KEYS[k])
end
-- Dead letters are JSON envelopes ({"payload": ..., "reason": ...}); their payload counts.
local dead = redis.call('LRANGE', KEYS[2], 0, -1)
for d = 1, #dead do
  local ok, entry = pcall(cjson.decode, dead[d])
  if ok and type(entry) == 'table' and type(entry.payload) == 'string' then
    present[entry.payload] = true
  end
end
local push = ARGV[1] == 'push'
local missing = {}
local pushed = 0
for i = 2, #ARGV do
  if not present[ARGV[i]] then
    present[ARGV[i]] = true
    if push then
      redis.call('LPUSH', KEYS[1], ARGV[i])
      pushed = pushed + 1
    else
      missing[#missing + 1] = i - 1
    end
  end
end
if not push then
  return missing
end
if pushed > 0 then
  redis.call('INCRBY', KEYS[3], pushed)
end
return pushed
