#!lua
-- Open the transaction a StartTransaction announces, once: the stored id if
-- this content was seen before (a redelivery, or the charger retrying under
-- a new message id), else the next id, with its record and markers written
-- now, so later messages of the same batch see it. Idempotent by content,
-- which is what makes writing ahead of the commit safe.
--
-- KEYS: idempotency key, counter, id tag, id tag's active marker,
--       connector, active transactions set
-- ARGV: idempotency ttl s, transaction key prefix, charge point, connector
--       id, id tag, meter start, start timestamp, reservation id or '',
--       expiry s of the active marker (a stop that never comes must not
--       block the tag forever)
-- Returns: {transaction id, id of another transaction the tag is already
--          charging in or '', the id tag's authorization hash (flat)}
local id = redis.call('GET', KEYS[1])
if not id then
  id = tostring(redis.call('INCR', KEYS[2]))
  redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
  local txn = ARGV[2] .. id
  redis.call('HSET', txn, 'charge_point_id', ARGV[3], 'connector_id', ARGV[4],
    'id_tag', ARGV[5], 'meter_start', ARGV[6], 'start_timestamp', ARGV[7])
  if ARGV[8] ~= '' then
    redis.call('HSET', txn, 'reservation_id', ARGV[8])
  end
  redis.call('SET', KEYS[4], id, 'NX', 'EX', ARGV[9])
  redis.call('HSET', KEYS[5], 'transaction_id', id)
  redis.call('SADD', KEYS[6], id)
end
local holder = redis.call('GET', KEYS[4])
local other = ''
if holder and holder ~= id then
  other = holder
end
return {tonumber(id), other, redis.call('HGETALL', KEYS[3])}
