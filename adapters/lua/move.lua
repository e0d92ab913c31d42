#!lua
-- Move up to ARGV[1] envelopes from the right (oldest) end of the list
-- KEYS[1] onto the stream KEYS[2], each as field ARGV[2], in arrival order.
-- One script is one atomic step: a client killed at any instant has moved
-- an envelope entirely or not at all. The shebang makes an out-of-memory
-- Redis refuse the script before it pops anything.
--
-- Traced moves (ARGV[3] is the trace field) store, as that field, the trace
-- context of each envelope that has one worth carrying; the others get no
-- field at all (nothing downstream records an unsampled trace of ours).
-- ARGV[4] holds a span id for each envelope, 16 hex digits each, the i-th
-- at (i - 1) * 16; ARGV[5] the envelopes whose new trace the adapter
-- sampled, ascending, 36 characters each: the envelope's index (4 hex
-- digits) and the trace id. Such an envelope's context is '00-<trace
-- id>-<its span id>-01'. An envelope that carries its own "traceparent"
-- continues that trace instead, sampled or not: its trace id and flags,
-- our span id. Those are returned as {count, index, their traceparent, ...}
-- so the adapter can record its spans under the right parents.
local items = redis.call('RPOP', KEYS[1], ARGV[1])
if not items then
  return 0
end
local field = ARGV[3]
if not field then
  for i = 1, #items do
    redis.call('XADD', KEYS[2], '*', ARGV[2], items[i])
  end
  return #items
end
local spans, roots = ARGV[4], ARGV[5]
local out = {#items}
local at = 1 -- the next record of roots
local next_root = tonumber(string.sub(roots, 1, 4), 16) -- nil when there is none
for i = 1, #items do
  local item, tp = items[i], nil
  if i == next_root then
    tp = '00-' .. string.sub(roots, at + 4, at + 35) .. '-'
      .. string.sub(spans, i * 16 - 15, i * 16) .. '-01'
    at = at + 36
    next_root = tonumber(string.sub(roots, at, at + 3), 16)
  end
  -- (A cheap necessary condition first: envelopes are full of '"', the
  -- first byte a plain search would stop at.)
  if string.find(item, 'ceparent"', 1, true) then
    local theirs = string.match(item, '"traceparent"%s*:%s*"(00%-[0-9a-f]+%-[0-9a-f]+%-[0-9a-f][0-9a-f])"')
    if theirs and #theirs == 55 and string.sub(theirs, 36, 36) == '-'
        and string.sub(theirs, 4, 35) ~= string.rep('0', 32)
        and string.sub(theirs, 37, 52) ~= string.rep('0', 16) then
      tp = '00-' .. string.sub(theirs, 4, 35) .. '-' .. string.sub(spans, i * 16 - 15, i * 16)
        .. '-' .. string.sub(theirs, 54)
      out[#out + 1] = i
      out[#out + 1] = theirs
    end
  end
  if tp then
    redis.call('XADD', KEYS[2], '*', ARGV[2], item, field, tp)
  else
    redis.call('XADD', KEYS[2], '*', ARGV[2], item)
  end
end
return out
