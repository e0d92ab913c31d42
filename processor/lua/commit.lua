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
-- The history records of every entry applied go to the history stream in
-- one XADD per batch, a field per entry named by its id (processor/history.py).
--
-- KEYS: stream, dead-letter stream, history stream
-- ARGV: group, reply ttl ms, dead-letter maxlen, consumer, batch, blobs...
--       The batch is one MessagePack array (one argument rather than a dozen
--       per entry: packing arguments was the processor's largest cost) of
--       {id, reply key, reply, dead reason, raw at, ops, history at}, each
--       op {name, args...} (see processor/effects.py); "raw at" and "history
--       at" are 0 or the position among the blobs of the entry's raw
--       envelope and of its packed history records, which may be any bytes
--       and so cannot be MessagePack str (cmsgpack has no bin type).
-- Returns per entry: 1 applied, 0 already acknowledged (skipped), or a
-- string listing the ops that failed (applied otherwise).
local stream, dead, history = KEYS[1], KEYS[2], KEYS[3]
local group, ttl, dead_maxlen, consumer = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local batch = cmsgpack.unpack(ARGV[5])
-- Field, value pairs of this batch's history entry.
local records = {}

local function anomaly(fallback, kind, key, pairs, from)
  -- What the scripts find odd goes live to the capped stream and, when
  -- that stream is the anomalies', to history as well.
  local res = redis.pcall('XADD', fallback, 'MAXLEN', '~', dead_maxlen, '*',
    'kind', kind, 'key', key, unpack(pairs, from))
  if fallback == 'ocpp:anomalies' then
    local flat = {'kind', kind, 'key', key}
    for i = from, #pairs do
      flat[#flat + 1] = pairs[i]
    end
    records[#records + 1] = '!anomaly:' .. #records
    records[#records + 1] = cmsgpack.pack(flat)
  end
  return res
end

local function hset_if(op)
  -- key, field, equals, fallback, kind, field/value pairs
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
  return anomaly(op[5], op[6], key, op, 7)
end

local function hset_newer(op)
  -- key, timestamp field, timestamp, field/value pairs: newest wins, so a
  -- late or redelivered older message never overwrites newer state.
  -- Timestamps are fixed-width UTC text, which compares as time does.
  local current = redis.call('HGET', op[2], op[3])
  if current and current >= op[4] then
    return 0
  end
  return redis.pcall('HSET', op[2], op[3], op[4], unpack(op, 5))
end

local function latest(op)
  -- key, then field, value pairs, each value opening with its fixed-width
  -- timestamp (27 characters): newest wins per field. The field '@' holds
  -- the newest timestamp written to any: a reading newer than that (the
  -- usual case, readings arrive in order) is newer than every field, and
  -- is written without reading them; an older one is compared field by
  -- field.
  local key = op[2]
  local oldest, at = string.sub(op[4], 1, 27), string.sub(op[4], 1, 27)
  for i = 6, #op, 2 do
    local t = string.sub(op[i], 1, 27)
    if t < oldest then
      oldest = t
    elseif t > at then
      at = t
    end
  end
  local newest = redis.call('HGET', key, '@')
  if not newest or newest < oldest then
    return redis.pcall('HSET', key, '@', at, unpack(op, 3))
  end
  local names = {}
  for i = 3, #op, 2 do
    names[#names + 1] = op[i]
  end
  local current = redis.call('HMGET', key, unpack(names))
  local set = {}
  for n, held in ipairs(current) do
    local value = op[2 * n + 2]
    if not held or string.sub(held, 1, 27) < string.sub(value, 1, 27) then
      set[#set + 1] = names[n]
      set[#set + 1] = value
    end
  end
  if #set == 0 then
    return 0
  end
  if not newest or newest < at then
    set[#set + 1] = '@'
    set[#set + 1] = at
  end
  return redis.pcall('HSET', key, unpack(set))
end

local function hset_once(op)
  -- key, marker field, fallback, kind, field/value pairs: write the pairs
  -- and the marker if the marker is absent; if it is present, an identical
  -- write is a no-op and a different one goes to the fallback stream.
  local key = op[2]
  if not redis.call('HGET', key, op[3]) then
    return redis.pcall('HSET', key, op[3], '1', unpack(op, 6))
  end
  for i = 6, #op, 2 do
    if redis.call('HGET', key, op[i]) ~= op[i + 1] then
      return anomaly(op[4], op[5], key, op, 6)
    end
  end
  return 0
end

local function unset_if(op)
  -- key, field, value: delete the key (field '') or the hash field if it
  -- still holds value, so clearing a marker never clears someone else's.
  if op[3] == '' then
    if redis.call('GET', op[2]) == op[4] then
      return redis.call('DEL', op[2])
    end
  elseif redis.call('HGET', op[2], op[3]) == op[4] then
    return redis.call('HDEL', op[2], op[3])
  end
  return 0
end

local run

local function complete_command(op)
  -- id, charge point, now ms, {field, value...}, {ops to apply if completed}
  local id, cp, now = op[2], op[3], tonumber(op[4])
  local cmd = 'ocpp:cmd:' .. id
  local state = redis.call('HGET', cmd, 'state')
  if state == 'sent' and redis.call('HGET', cmd, 'charge_point_id') == cp then
    local sent = tonumber(redis.call('HGET', cmd, 'sent_at_ms'))
    redis.call('HSET', cmd, 'completed_at_ms', now, 'round_trip_ms', now - sent, unpack(op[5]))
    redis.call('ZREM', 'ocpp:cmd:deadlines', id)
    for _, applied in ipairs(op[6]) do
      run(applied)
    end
    notify(id)
    archive_command(id)
    if redis.call('GET', 'ocpp:cmd:inflight:' .. cp) == id then
      redis.call('DEL', 'ocpp:cmd:inflight:' .. cp)
      pump(cp, now, ttl)
    end
    return 1
  end
  if state then
    -- Timed out, or answered already: kept for the record, not applied.
    local late = {'late_at_ms', now}
    for i = 1, #op[5], 2 do
      late[#late + 1] = 'late_' .. op[5][i]
      late[#late + 1] = op[5][i + 1]
    end
    local res = redis.pcall('HSET', cmd, unpack(late))
    archive_command(id)
    return res
  end
  return anomaly('ocpp:anomalies', 'reply to an unknown command', 'ocpp:cmd:' .. id,
    {'charge_point_id', cp, 'command_id', id}, 1)
end

local conditional = {
  hset_if = hset_if, hset_newer = hset_newer, hset_once = hset_once, unset_if = unset_if,
  latest = latest,
  complete_command = complete_command,
}

function run(op)
  if op[1] == 'call' then
    return redis.pcall(unpack(op, 2))
  end
  local ok, res = pcall(conditional[op[1]], op)
  if ok then
    return res
  end
  return {err = tostring(res)}
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
    if e[7] > 0 then
      records[#records + 1] = id
      records[#records + 1] = ARGV[5 + e[7]]
    end
    out[n] = #failed > 0 and table.concat(failed, '; ') or 1
  else
    out[n] = 0
  end
end
-- In entries of at most 2,000 fields: unpack cannot take many more than
-- 8,000 values, and failing here, after the XACKs, would lose the history.
for first = 1, #records, 4000 do
  redis.call('XADD', history, '*', unpack(records, first, math.min(first + 3999, #records)))
end
-- Once per reply list, not once per reply.
for key in pairs(expire) do
  redis.call('PEXPIRE', key, ttl)
end
return out
