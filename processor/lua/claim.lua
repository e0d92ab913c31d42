#!lua
-- XAUTOCLAIM entries idle for too long, with how often each was delivered
-- (XAUTOCLAIM does not say, and the dead-letter policy needs it), in one
-- round trip and one atomic step.
-- KEYS: stream. ARGV: group, consumer, min idle ms, start id, count.
-- Returns: next start id, entries, their delivery counts, ids of entries
-- that were pending but no longer exist in the stream.
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local entries = r[2]
local counts = {}
for k, e in ipairs(entries) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], e[1], e[1], 1)
  if p[1] then counts[k] = p[1][4] else counts[k] = 1 end
end
return {r[1], entries, counts, r[3] or {}}
