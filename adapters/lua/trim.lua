#!lua flags=allow-oom
-- Trim the stream KEYS[1] of entries every consumer group has been given
-- and acknowledged; keep everything when no group exists yet (the first
-- processor will start reading from the beginning).
--
-- For each group, entries before both its oldest pending entry and its
-- last-delivered id are done with; the minimum over all groups is the
-- MINID. Trimming is approximate (~), which only ever keeps more.
-- Returns the number of entries removed, or -1 when no group exists.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end

local function before(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  ams, bms = tonumber(ams), tonumber(bms)
  if ams ~= bms then
    return ams < bms
  end
  return tonumber(aseq) < tonumber(bseq)
end

local minid = nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for k = 1, #g, 2 do info[g[k]] = g[k + 1] end
  local bound = info['last-delivered-id']
  local pending = redis.call('XPENDING', KEYS[1], info['name'])
  if pending[1] > 0 and before(pending[2], bound) then
    bound = pending[2]
  end
  if minid == nil or before(bound, minid) then
    minid = bound
  end
end
if minid == nil then
  return -1
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', minid)
