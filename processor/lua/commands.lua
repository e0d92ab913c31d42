#!lua
-- The command queue's two entry points (processor/command_queue.py); the
-- charger's reply completes a command in the commit (commit.lua).
--
-- enqueue: KEYS: deadlines, command, queue. ARGV: 'enqueue', now ms, reply
--   ttl ms, retention s, deadline ms, cp, id, field/value pairs.
--   Records the command as queued, queues it and sends it if the slot is
--   free; returns the command's hash as it then is.
-- expire: KEYS: deadlines. ARGV: 'expire', now ms, reply ttl ms, retention s,
--   limit. Times out commands past their deadline, queued or sent, frees the
--   slot of a sent one and sends the next. Returns how many deadlines it
--   looked at (the limit: there may be more), then the action of each
--   command it timed out.
local deadlines = KEYS[1]
local mode, now, reply_ttl, retention = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]

if mode == 'enqueue' then
  local cmd, queue, deadline, cp, id = KEYS[2], KEYS[3], ARGV[5], ARGV[6], ARGV[7]
  redis.call('HSET', cmd, 'state', 'queued', unpack(ARGV, 8))
  redis.call('EXPIRE', cmd, retention)
  redis.call('ZADD', deadlines, deadline, id)
  redis.call('RPUSH', queue, id)
  archive_command(id)
  pump(cp, now, reply_ttl)
  return redis.call('HGETALL', cmd)
end

local due = redis.call('ZRANGEBYSCORE', deadlines, '-inf', now, 'LIMIT', 0, ARGV[5])
local out = {#due}
for _, id in ipairs(due) do
  redis.call('ZREM', deadlines, id)
  local cmd = 'ocpp:cmd:' .. id
  local state = redis.call('HGET', cmd, 'state')
  if state == 'queued' or state == 'sent' then
    redis.call('HSET', cmd, 'state', 'timed_out', 'completed_at_ms', now)
    redis.call('EXPIRE', cmd, retention)
    notify(id)
    archive_command(id)
    out[#out + 1] = redis.call('HGET', cmd, 'action') or ''
    local cp = redis.call('HGET', cmd, 'charge_point_id')
    if state == 'sent' and redis.call('GET', 'ocpp:cmd:inflight:' .. cp) == id then
      redis.call('DEL', 'ocpp:cmd:inflight:' .. cp)
      pump(cp, now, reply_ttl)
    end
  end
end
return out
