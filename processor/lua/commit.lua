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
--       The batch is one flat MessagePack array (one argument rather than a
--       dozen per entry: packing arguments was the processor's largest
--       cost; flat, because unpacking a table per entry and per op was a
--       third of the script's time). Per entry: id, reply key, reply, dead
--       reason, raw at, history at, op count, then each op as its length
--       and its elements {name, args...} (see processor/effects.py). "raw
--       at" and "history at" are 0 or the position among the blobs of the
--       entry's raw envelope and of its packed history records, which may
--       be any bytes and so cannot be MessagePack str (cmsgpack has no bin
--       type). An op's elements b[o..e] are read in place, never copied
--       into a table of their own.
-- Returns per entry: 1 applied, 0 already acknowledged (skipped), or a
-- string listing the ops that failed (applied otherwise).
local stream, dead, history = KEYS[1], KEYS[2], KEYS[3]
local group, ttl, dead_maxlen, consumer = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local batch = cmsgpack.unpack(ARGV[5])
-- Field, value pairs of this batch's history entry.
local records = {}

local function anomaly(fallback, kind, key, pairs, from, to)
  -- What the scripts find odd goes live to the capped stream and, when
  -- that stream is the anomalies', to history as well.
  local res = redis.pcall('XADD', fallback, 'MAXLEN', '~', dead_maxlen, '*',
    'kind', kind, 'key', key, unpack(pairs, from, to))
  if fallback == 'ocpp:anomalies' then
    local flat = {'kind', kind, 'key', key}
    for i = from, to do
      flat[#flat + 1] = pairs[i]
    end
    records[#records + 1] = '!anomaly:' .. #records
    records[#records + 1] = cmsgpack.pack(flat)
  end
  return res
end

local function hset_if(b, o, e)
  -- key, field, equals, fallback, kind, field/value pairs
  local key, field, equals = b[o + 1], b[o + 2], b[o + 3]
  local ok
  if field == '' then
    ok = redis.call('EXISTS', key) == 1
  else
    ok = redis.call('HGET', key, field) == equals
  end
  if ok then
    return redis.pcall('HSET', key, unpack(b, o + 6, e))
  end
  return anomaly(b[o + 4], b[o + 5], key, b, o + 6, e)
end

local function hset_newer(b, o, e)
  -- key, timestamp field, timestamp, field/value pairs: newest wins, so a
  -- late or redelivered older message never overwrites newer state.
  -- Timestamps are fixed-width UTC text, which compares as time does.
  local current = redis.call('HGET', b[o + 1], b[o + 2])
  if current and current >= b[o + 3] then
    return 0
  end
  return redis.pcall('HSET', unpack(b, o + 1, e))
end

local function latest(b, o, e)
  -- key, oldest, newest, then field, value pairs, each value opening with
  -- its fixed-width timestamp (27 characters): newest wins per field.
  -- oldest and newest bound those timestamps (processor/effects.py). The
  -- field '@' holds the newest timestamp written to any: a reading newer
  -- than that (the usual case, readings arrive in order) is newer than
  -- every field, and is written without reading them; an older one is
  -- compared field by field.
  local key, oldest, at = b[o + 1], b[o + 2], b[o + 3]
  local newest = redis.call('HGET', key, '@')
  if not newest or newest < oldest then
    return redis.pcall('HSET', key, '@', at, unpack(b, o + 4, e))
  end
  local names = {}
  for i = o + 4, e, 2 do
    names[#names + 1] = b[i]
  end
  local current = redis.call('HMGET', key, unpack(names))
  local set = {}
  for n, held in ipairs(current) do
    local value = b[o + 2 * n + 3]
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

local function newest_fields(b, o, e)
  -- key, times key, time, then field, value pairs: each field written (its
  -- value on key, the time on times) unless times holds a later one for it.
  -- For a device model, where a report generated before a SetVariables may
  -- be processed after it. Timestamps are fixed-width UTC text.
  local key, times, at = b[o + 1], b[o + 2], b[o + 3]
  local names = {}
  for i = o + 4, e, 2 do
    names[#names + 1] = b[i]
  end
  local held = redis.call('HMGET', times, unpack(names))
  local values, stamps = {}, {}
  for n, name in ipairs(names) do
    if not held[n] or held[n] <= at then
      values[#values + 1] = name
      values[#values + 1] = b[o + 2 * n + 3]
      stamps[#stamps + 1] = name
      stamps[#stamps + 1] = at
    end
  end
  if #values == 0 then
    return 0
  end
  redis.pcall('HSET', times, unpack(stamps))
  return redis.pcall('HSET', key, unpack(values))
end

local function hset_once(b, o, e)
  -- key, marker field, fallback, kind, field/value pairs: write the pairs
  -- and the marker if the marker is absent; if it is present, an identical
  -- write is a no-op and a different one goes to the fallback stream.
  local key = b[o + 1]
  if not redis.call('HGET', key, b[o + 2]) then
    return redis.pcall('HSET', key, b[o + 2], '1', unpack(b, o + 5, e))
  end
  for i = o + 5, e, 2 do
    if redis.call('HGET', key, b[i]) ~= b[i + 1] then
      return anomaly(b[o + 3], b[o + 4], key, b, o + 5, e)
    end
  end
  return 0
end

local function unset_if(b, o)
  -- key, field, value: delete the key (field '') or the hash field if it
  -- still holds value, so clearing a marker never clears someone else's.
  local key, field, value = b[o + 1], b[o + 2], b[o + 3]
  if field == '' then
    if redis.call('GET', key) == value then
      return redis.call('DEL', key)
    end
  elseif redis.call('HGET', key, field) == value then
    return redis.call('HDEL', key, field)
  end
  return 0
end

local run

local function complete_command(b, o)
  -- id, charge point, now ms, {field, value...}, {ops to apply if completed}
  local id, cp, now, fields, ops = b[o + 1], b[o + 2], tonumber(b[o + 3]), b[o + 4], b[o + 5]
  local cmd = 'ocpp:cmd:' .. id
  local state = redis.call('HGET', cmd, 'state')
  if state == 'sent' and redis.call('HGET', cmd, 'charge_point_id') == cp then
    local sent = tonumber(redis.call('HGET', cmd, 'sent_at_ms'))
    redis.call('HSET', cmd, 'completed_at_ms', now, 'round_trip_ms', now - sent, unpack(fields))
    redis.call('ZREM', 'ocpp:cmd:deadlines', id)
    for _, applied in ipairs(ops) do
      run(applied, 1, #applied)
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
    for i = 1, #fields, 2 do
      late[#late + 1] = 'late_' .. fields[i]
      late[#late + 1] = fields[i + 1]
    end
    local res = redis.pcall('HSET', cmd, unpack(late))
    archive_command(id)
    return res
  end
  return anomaly('ocpp:anomalies', 'reply to an unknown command', 'ocpp:cmd:' .. id,
    {'charge_point_id', cp, 'command_id', id}, 1, 4)
end

local conditional = {
  hset_if = hset_if, hset_newer = hset_newer, hset_once = hset_once, unset_if = unset_if,
  latest = latest, newest_fields = newest_fields,
  complete_command = complete_command,
}

function run(b, o, e)
  -- The op b[o..e]: its name, then its arguments.
  if b[o] == 'call' then
    return redis.pcall(unpack(b, o + 1, e))
  end
  local ok, res = pcall(conditional[b[o]], b, o, e)
  if ok then
    return res
  end
  return {err = tostring(res)}
end

local out = {}
local expire = {}
local i, n = 1, 0
while i <= #batch do
  local id, reply_key, reply, reason = batch[i], batch[i + 1], batch[i + 2], batch[i + 3]
  local raw_at, history_at, op_count = batch[i + 4], batch[i + 5], batch[i + 6]
  i = i + 7
  n = n + 1
  if redis.call('XACK', stream, group, id) == 1 then
    local failed = {}
    for _ = 1, op_count do
      local o, e = i + 1, i + batch[i]
      local res = run(batch, o, e)
      if type(res) == 'table' and res.err then
        failed[#failed + 1] = batch[o] .. ' ' .. tostring(batch[o + 1]) .. ': ' .. res.err
      end
      i = e + 1
    end
    if reason ~= '' then
      local raw = raw_at > 0 and ARGV[5 + raw_at] or ''
      redis.call('XADD', dead, 'MAXLEN', '~', dead_maxlen, '*', 'reason', reason,
        'envelope', raw, 'entry_id', id, 'consumer', consumer)
    end
    if reply_key ~= '' then
      redis.call('LPUSH', reply_key, reply)
      expire[reply_key] = true
    end
    if history_at > 0 then
      records[#records + 1] = id
      records[#records + 1] = ARGV[5 + history_at]
    end
    out[n] = #failed > 0 and table.concat(failed, '; ') or 1
  else
    for _ = 1, op_count do
      i = i + 1 + batch[i]
    end
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
