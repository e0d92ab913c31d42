-- Shared by the scripts that free or fill a charger's CALL slot
-- (processor/redis_io.py prepends it). OCPP-J allows one CALL in flight per
-- charger: pump sends the next queued command if the slot is free.
-- Names: ocpp:cmd:{id}, ocpp:cmd:queue:{cp}, ocpp:cmd:inflight:{cp}.
local function pump(cp, now_ms, reply_ttl_ms)
  local slot = 'ocpp:cmd:inflight:' .. cp
  if redis.call('EXISTS', slot) == 1 then
    return false
  end
  while true do
    local id = redis.call('LPOP', 'ocpp:cmd:queue:' .. cp)
    if not id then
      return false
    end
    local cmd = 'ocpp:cmd:' .. id
    -- A command that timed out while queued is skipped.
    if redis.call('HGET', cmd, 'state') == 'queued' then
      redis.call('SET', slot, id)
      redis.call('HSET', cmd, 'state', 'sent', 'sent_at_ms', now_ms)
      local reply = 'ocpp:responses:' .. cp
      redis.call('LPUSH', reply, redis.call('HGET', cmd, 'frame'))
      redis.call('PEXPIRE', reply, reply_ttl_ms)
      -- Our commands are always among the charger's last frames
      -- (processor/frames.py; keys.FRAMES_KEPT is 50 too, KEPT_S a week).
      local call = redis.call('HGET', cmd, 'call')
      if call then
        local frames = 'ocpp:frames:' .. cp
        redis.call('LPUSH', frames,
          cjson.encode({at = tonumber(now_ms), dir = 'out', frame = call}))
        redis.call('LTRIM', frames, 0, 49)
        redis.call('EXPIRE', frames, 604800)
      end
      return id
    end
  end
end

-- The command as it now is, to history (processor/history.py): recorded when
-- queued and when it reaches its outcome.
local function archive_command(id)
  local flat = redis.call('HGETALL', 'ocpp:cmd:' .. id)
  flat[#flat + 1] = 'command_id'
  flat[#flat + 1] = id
  -- pcall: a failure here must not stop the caller freeing the charger's
  -- slot and sending its next command.
  redis.pcall('XADD', 'ocpp:history', '*', '!command', cmsgpack.pack(flat))
end

-- Tell whoever waits on a command that it has an outcome.
local function notify(id)
  local done = 'ocpp:cmd:' .. id .. ':done'
  redis.call('LPUSH', done, '1')
  redis.call('EXPIRE', done, 60)
end
