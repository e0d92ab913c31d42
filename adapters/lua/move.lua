#!lua
-- Move up to ARGV[1] envelopes from the right (oldest) end of the list
-- KEYS[1] onto the stream KEYS[2], each as field ARGV[2], in arrival order.
-- One script is one atomic step: a client killed at any instant has moved
-- an envelope entirely or not at all. The shebang makes an out-of-memory
-- Redis refuse the script before it pops anything.
local items = redis.call('RPOP', KEYS[1], ARGV[1])
if not items then
  return 0
end
for i = 1, #items do
  redis.call('XADD', KEYS[2], '*', ARGV[2], items[i])
end
return #items
