#!lua
-- Remove consumers that hold nothing and have been idle longer than ARGV[2]
-- ms, except ARGV[3] (the caller). Atomic, so a consumer that just got
-- entries is never removed with them.
-- KEYS: stream. ARGV: group, idle ms, caller's name. Returns removed names.
local removed = {}
local idle = tonumber(ARGV[2])
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for k = 1, #c, 2 do info[c[k]] = c[k + 1] end
  if info['pending'] == 0 and info['idle'] > idle and info['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    removed[#removed + 1] = info['name']
  end
end
return removed
