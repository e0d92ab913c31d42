-- Chargers seen: ARGV is charger, time pairs (fixed-width UTC text, which
-- compares as time does). Each charger's last_seen is written unless it
-- already holds a later time: a replica writing late (it writes before its
-- next batch) never moves it back.
for i = 1, #ARGV, 2 do
  local key = 'ocpp:cp:' .. ARGV[i]
  local held = redis.call('HGET', key, 'last_seen')
  if not held or held < ARGV[i + 1] then
    redis.call('HSET', key, 'last_seen', ARGV[i + 1])
  end
end
return 0
