#!lua
-- The transactionId for one StartTransaction content key: the stored one if
-- this content was seen before, else the next value of the counter.
-- KEYS: idempotency key, counter. ARGV: ttl seconds of the idempotency key.
local id = redis.call('GET', KEYS[1])
if id then
  return tonumber(id)
end
id = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
return id
