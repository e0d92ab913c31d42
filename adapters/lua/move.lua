#!lua
-- Move up to ARGV[1] envelopes from the right (oldest) end of the list
-- KEYS[1] onto the stream KEYS[2], each as field ARGV[2], in arrival order.
-- One script is one atomic step: a client killed at any instant has moved
-- an envelope entirely or not at all. The shebang makes an out-of-memory
-- Redis refuse the script before it pops anything.
--
-- Traced moves (ARGV[3] is the trace field) give the i-th envelope, as field
-- ARGV[3], the trace context the adapter started for it: ARGV[4] holds one
-- per envelope, 49 characters each: '1' if the trace is sampled (else '0'),
-- the span id, the trace id. A sampled one is stored as a traceparent, one
-- that is not as '-' (nothing downstream records it). An envelope that
-- carries its own "traceparent" continues that trace instead: its trace id
-- and flags, the adapter's span id. Those are returned as {count, index,
-- their traceparent, ...} so the adapter can record its spans under the
-- right parents once the move is done.
local items = redis.call('RPOP', KEYS[1], ARGV[1])
if not items then
  return 0
end
local field, slots = ARGV[3], ARGV[4]
if not field then
  for i = 1, #items do
    redis.call('XADD', KEYS[2], '*', ARGV[2], items[i])
  end
  return #items
end
local out = {#items}
for i = 1, #items do
  local item, at = items[i], (i - 1) * 49
  local tp = '-'
  if string.byte(slots, at + 1) == 49 then -- '1'
    tp = '00-' .. string.sub(slots, at + 18, at + 49) .. '-' .. string.sub(slots, at + 2, at + 17) .. '-01'
  end
  if string.find(item, '"traceparent"', 1, true) then
    local theirs = string.match(item, '"traceparent"%s*:%s*"(00%-[0-9a-f]+%-[0-9a-f]+%-[0-9a-f][0-9a-f])"')
    if theirs and #theirs == 55 and string.sub(theirs, 36, 36) == '-'
        and string.sub(theirs, 4, 35) ~= string.rep('0', 32)
        and string.sub(theirs, 37, 52) ~= string.rep('0', 16) then
      tp = '00-' .. string.sub(theirs, 4, 35) .. '-' .. string.sub(slots, at + 2, at + 17)
        .. '-' .. string.sub(theirs, 54)
      out[#out + 1] = i
      out[#out + 1] = theirs
    end
  end
  redis.call('XADD', KEYS[2], '*', ARGV[2], item, field, tp)
end
return out
