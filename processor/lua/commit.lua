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
-- ARGV: group, reply ttl ms, dead-letter maxlen, consumer, batch, raws...
--       The batch is one MessagePack array (one argument rather than a dozen
--       per entry: packing arguments was the processor's largest cost) of
--       {id, reply key, reply, dead reason, raw at, ops}, each op {name,
--       args...} (see processor/effects.py); "raw at" is 0 or the position
--       of the entry's raw envelope among the raws, which may be any bytes
--       and so cannot be MessagePack str (cmsgpack has no bin type).
-- Returns per entry: 1 applied, 0 already acknowledged (skipped), or a
-- string listing the ops that failed (applied otherwise).
local stream, dead = KEYS[1], KEYS[2]
local group, ttl, dead_maxlen, consumer = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local batch = cmsgpack.unpack(ARGV[5])

local function run(op)
  if op[1] == 'call' then
    return redis.pcall(unpack(op, 2))
  end
  -- hset_if: key, field, equals, fallback, note, field/value pairs
  local key, field, equals = op[2], op[3], op[4]
  local ok
  if field == '' then
    ok = redis.call('EXISTS', key) == 1
  else
    ok = redis.call('HGET', key, field) == equals
  end
  if ok then
    return redis.pcall('HSET', key, unpack(op, 7))
  end
  return redis.pcall('XADD', op[5], 'MAXLEN', '~', dead_maxlen, '*',
    'key', key, 'note', op[6], unpack(op, 7))
end

local out = {}
local expire = {}
for n, e in ipairs(batch) do
  local id, reply_key, reply, reason, ops = e[1], e[2], e[3], e[4], e[6]
  if redis.call('XACK', stream, group, id) == 1 then
    local failed = {}
    for _, op in ipairs(ops) do
      local res = run(op)
      if type(res) == 'table' and res.err then
        failed[#failed + 1] = op[1] .. ' ' .. tostring(op[2]) .. ': ' .. res.err
      end
    end
    if reason ~= '' then
      local raw = e[5] > 0 and ARGV[5 + e[5]] or ''
      redis.call('XADD', dead, 'MAXLEN', '~', dead_maxlen, '*', 'reason', reason,
        'envelope', raw, 'entry_id', id, 'consumer', consumer)
    end
    if reply_key ~= '' then
      redis.call('LPUSH', reply_key, reply)
      expire[reply_key] = true
    end
    out[n] = #failed > 0 and table.concat(failed, '; ') or 1
  else
    out[n] = 0
  end
end
-- Once per reply list, not once per reply.
for key in pairs(expire) do
  redis.call('PEXPIRE', key, ttl)
end
return out
