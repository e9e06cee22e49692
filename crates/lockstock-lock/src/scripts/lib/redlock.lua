-- Helper (prepended at build time): what every Redlock instance script checks.
--
-- Expects in scope: nothing.
-- Returns: quarantine_left(quarantine_ms) -> ms until this instance may grant again (it
--                restarted less than the quarantine ago), or nil when it may grant now. The
--                restart instant comes from INFO (uptime_in_seconds, whole seconds; one second is
--                taken off, so the quarantine errs long, by up to two seconds, never short)
--          raise_counter(counter, fence) -> raises the fence counter to `fence` (a numeric
--                string), never lowers it
local function quarantine_left(quarantine)
  if quarantine > 0 then
    local info = redis.call('INFO', 'server')
    -- Whole seconds of both the clock and the start time: the true uptime may be a second less.
    local uptime = math.max(0, (tonumber(string.match(info, 'uptime_in_seconds:(%d+)')) or 0) - 1)
    if uptime * 1000 < quarantine then
      return quarantine - uptime * 1000
    end
  end
  return nil
end

local function raise_counter(counter, fence)
  if tonumber(redis.call('GET', counter) or '0') < tonumber(fence) then
    redis.call('SET', counter, fence)
  end
end
