#!lua
-- Commit a batch of handled stream entries: for each entry, XACK it and, only
-- if that XACK acknowledged it (it was still pending, nobody committed it
-- before us), apply its effects, push its reply and dead-letter it if asked.
-- The XACK is the fence that keeps a redelivered entry (crash, or a claim
-- from a replica that was only slow) from applying its effects twice.
--
-- The shebang makes Redis refuse the whole script up front when it is out of
-- memory, instead of failing half way through a batch.
--
-- KEYS: stream, dead-letter stream
-- ARGV: group, reply ttl ms, dead-letter maxlen, consumer, then per entry:
--       id, reply key, reply, dead reason, raw envelope, op count, ops...
--       where each op is: argc, name, args... (see processor/effects.py)
-- Returns per entry: 1 applied, 0 already acknowledged (skipped), or a
-- string listing the ops that failed (applied otherwise).
local stream, dead = KEYS[1], KEYS[2]
local group, ttl, dead_maxlen, consumer = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

local function hset_if(a, i, argc)
  -- args: key, field, equals, fallback, note, field/value pairs
  local key, field, equals = a[i], a[i + 1], a[i + 2]
  local ok
  if field == '' then
    ok = redis.call('EXISTS', key) == 1
  else
    ok = redis.call('HGET', key, field) == equals
  end
  local pairs_at, last = i + 5, i + argc - 2
  if ok then
    return redis.pcall('HSET', key, unpack(a, pairs_at, last))
  end
  return redis.pcall('XADD', a[i + 3], 'MAXLEN', '~', dead_maxlen, '*',
    'key', key, 'note', a[i + 4], unpack(a, pairs_at, last))
end

local out = {}
local i = 5
while i <= #ARGV do
  local id, reply_key, reply, reason, raw = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local nops = tonumber(ARGV[i + 5])
  i = i + 6
  local mine = redis.call('XACK', stream, group, id) == 1
  local failed = {}
  for _ = 1, nops do
    local argc = tonumber(ARGV[i])
    if mine then
      local res
      if ARGV[i + 1] == 'call' then
        res = redis.pcall(unpack(ARGV, i + 2, i + argc))
      else
        res = hset_if(ARGV, i + 2, argc)
      end
      if type(res) == 'table' and res.err then
        failed[#failed + 1] = ARGV[i + 1] .. ' ' .. tostring(ARGV[i + 2]) .. ': ' .. res.err
      end
    end
    i = i + argc + 1
  end
  if mine then
    if reason ~= '' then
      redis.call('XADD', dead, 'MAXLEN', '~', dead_maxlen, '*', 'reason', reason,
        'envelope', raw, 'entry_id', id, 'consumer', consumer)
    end
    if reply_key ~= '' then
      redis.call('LPUSH', reply_key, reply)
      redis.call('PEXPIRE', reply_key, ttl)
    end
    if #failed > 0 then
      out[#out + 1] = table.concat(failed, '; ')
    else
      out[#out + 1] = 1
    end
  else
    out[#out + 1] = 0
  end
end
return out
