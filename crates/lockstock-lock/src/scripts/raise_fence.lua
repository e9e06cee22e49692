-- Raises a resource's fence counter to at least a floor (never lowers it).
--
-- Used after Redis lost its data: the counter restarted low, so a fenced resource (the database)
-- refuses the new tokens; raising the counter to the resource's high-water mark restores progress.
--
-- KEYS[1]: fence counter
-- ARGV[1]: floor (non-negative integer)
-- Returns: the counter's value afterwards
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if current < floor then
  redis.call('SET', KEYS[1], ARGV[1])
  return floor
end
return current
