-- The archiver's writes (adapters/archiver/writer.py), one statement per
-- table per batch: columns arrive as arrays and unnest turns them into rows.
-- Every insert is keyed so that writing a batch again changes nothing
-- (adapters/archiver/rows.py says which key each table has). Times arrive
-- as text, which PostgreSQL parses itself.

-- name: meter_values
INSERT INTO meter_values (charge_point_id, connector_id, sampled_at, reading_key, transaction_id,
                          sampled_values, record_id, seq, transaction_ref)
SELECT c, n, t::timestamptz, k, x, v::json, r, s, xr
FROM unnest($1::text[], $2::int[], $3::text[], $4::bigint[], $5::int[], $6::text[], $7::text[],
            $8::int[], $9::text[])
     AS batch (c, n, t, k, x, v, r, s, xr)
ON CONFLICT DO NOTHING;

-- name: transaction_events
-- OCPP 2.0.1: an event written twice (a retry, a redelivery) is one row.
INSERT INTO transaction_events (charge_point_id, transaction_id, seq_no, event_type,
                                trigger_reason, occurred_at, offline, charging_state, id_token,
                                record_id)
SELECT c, x, q, e, tr, t::timestamptz, o, cs, i, r
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
            $7::bool[], $8::text[], $9::text[], $10::text[])
     AS batch (c, x, q, e, tr, t, o, cs, i, r)
ON CONFLICT DO NOTHING;

-- name: sessions
-- What the batch's events say of each 2.0.1 session: its EVSE and its
-- token from the lowest seqNo naming them, its start and its stop each
-- whole and once, the rest where still empty.
INSERT INTO transactions_v201 AS s (charge_point_id, transaction_id, evse_id, connector_id,
                                    evse_seq, id_token, id_token_type, id_token_status,
                                    id_token_seq, remote_start_id, reservation_id, started_at,
                                    meter_start, stopped_at, meter_stop, stopped_reason)
SELECT c, x, ev, n, es, i, it, st, ts, rs, rv, ta::timestamptz, ms, tb::timestamptz, mt, sr
FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::bigint[], $6::text[], $7::text[],
            $8::text[], $9::bigint[], $10::int[], $11::int[], $12::text[], $13::bigint[],
            $14::text[], $15::bigint[], $16::text[])
     AS batch (c, x, ev, n, es, i, it, st, ts, rs, rv, ta, ms, tb, mt, sr)
ON CONFLICT (charge_point_id, transaction_id) DO UPDATE SET
    -- Every SET sees the row as it was: a group's condition holds for all its
    -- columns. (A null new seq loses; a null held one means nothing held.)
    evse_id = CASE WHEN EXCLUDED.evse_seq < s.evse_seq OR s.evse_seq IS NULL
        THEN EXCLUDED.evse_id ELSE s.evse_id END,
    connector_id = CASE WHEN EXCLUDED.evse_seq < s.evse_seq OR s.evse_seq IS NULL
        THEN EXCLUDED.connector_id ELSE s.connector_id END,
    evse_seq = CASE WHEN EXCLUDED.evse_seq < s.evse_seq OR s.evse_seq IS NULL
        THEN EXCLUDED.evse_seq ELSE s.evse_seq END,
    id_token = CASE WHEN EXCLUDED.id_token_seq < s.id_token_seq OR s.id_token_seq IS NULL
        THEN EXCLUDED.id_token ELSE s.id_token END,
    id_token_type = CASE WHEN EXCLUDED.id_token_seq < s.id_token_seq OR s.id_token_seq IS NULL
        THEN EXCLUDED.id_token_type ELSE s.id_token_type END,
    id_token_status = CASE WHEN EXCLUDED.id_token_seq < s.id_token_seq OR s.id_token_seq IS NULL
        THEN EXCLUDED.id_token_status ELSE s.id_token_status END,
    id_token_seq = CASE WHEN EXCLUDED.id_token_seq < s.id_token_seq OR s.id_token_seq IS NULL
        THEN EXCLUDED.id_token_seq ELSE s.id_token_seq END,
    remote_start_id = coalesce(s.remote_start_id, EXCLUDED.remote_start_id),
    reservation_id = coalesce(s.reservation_id, EXCLUDED.reservation_id),
    started_at = coalesce(s.started_at, EXCLUDED.started_at),
    meter_start = CASE WHEN s.started_at IS NULL THEN EXCLUDED.meter_start ELSE s.meter_start END,
    stopped_at = coalesce(s.stopped_at, EXCLUDED.stopped_at),
    meter_stop = CASE WHEN s.stopped_at IS NULL THEN EXCLUDED.meter_stop ELSE s.meter_stop END,
    stopped_reason = CASE WHEN s.stopped_at IS NULL THEN EXCLUDED.stopped_reason
                          ELSE s.stopped_reason END;

-- name: starts
-- A start fills the columns a stop that came first left empty; a second
-- start of the same transaction (a retry) changes nothing.
INSERT INTO transactions (charge_point_id, transaction_id, connector_id, id_tag,
                          reservation_id, started_at, meter_start, id_tag_status)
SELECT c, x, n, i, r, t::timestamptz, m, st
FROM unnest($1::text[], $2::int[], $3::int[], $4::text[], $5::int[], $6::text[], $7::bigint[],
            $8::text[]) AS batch (c, x, n, i, r, t, m, st)
ON CONFLICT (charge_point_id, transaction_id) DO UPDATE SET
    connector_id = EXCLUDED.connector_id, id_tag = EXCLUDED.id_tag,
    reservation_id = EXCLUDED.reservation_id, started_at = EXCLUDED.started_at,
    meter_start = EXCLUDED.meter_start, id_tag_status = EXCLUDED.id_tag_status
WHERE transactions.started_at IS NULL;

-- name: stops
-- The first stop archived is kept, as Redis keeps the first it commits.
INSERT INTO transactions (charge_point_id, transaction_id, stopped_at, meter_stop, stop_reason,
                          stop_id_tag)
SELECT c, x, t::timestamptz, m, r, i
FROM unnest($1::text[], $2::int[], $3::text[], $4::bigint[], $5::text[], $6::text[])
     AS batch (c, x, t, m, r, i)
ON CONFLICT (charge_point_id, transaction_id) DO UPDATE SET
    stopped_at = EXCLUDED.stopped_at, meter_stop = EXCLUDED.meter_stop,
    stop_reason = EXCLUDED.stop_reason, stop_id_tag = EXCLUDED.stop_id_tag
WHERE transactions.stopped_at IS NULL;

-- name: variable_names
INSERT INTO device_variables (component, component_instance, variable, variable_instance)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
ON CONFLICT DO NOTHING;

-- name: variable_values
INSERT INTO variable_values (charge_point_id, origin, position, component, component_instance,
                             evse_id, connector_id, variable, variable_instance, attribute_type,
                             value, mutability, characteristics, source, reported_at)
SELECT c, o, p, cn, ci, ev, cr, vn, vi, ty, va, mu, ch::json, so, t::timestamptz
FROM unnest($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::int[], $7::int[],
            $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
            $14::text[], $15::text[])
     AS batch (c, o, p, cn, ci, ev, cr, vn, vi, ty, va, mu, ch, so, t)
ON CONFLICT DO NOTHING;

-- name: events
INSERT INTO charger_events (record_id, seq, charge_point_id, kind, occurred_at, connector_id,
                            details)
SELECT r, s, c, k, t::timestamptz, n, d::jsonb
FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[])
     AS batch (r, s, c, k, t, n, d)
ON CONFLICT DO NOTHING;

-- name: anomalies
INSERT INTO anomalies (record_id, seq, charge_point_id, kind, occurred_at, details)
SELECT r, s, c, k, t::timestamptz, d::jsonb
FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[])
     AS batch (r, s, c, k, t, d)
ON CONFLICT DO NOTHING;

-- name: dead_letters
INSERT INTO dead_letters (entry_id, charge_point_id, reason, envelope, dead_at)
SELECT e, c, r, b, t::timestamptz
FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[]) AS batch (e, c, r, b, t)
ON CONFLICT DO NOTHING;

-- name: commands
-- A command is recorded when queued, at its outcome, and again if a reply
-- comes after that (late, kept in outcome's "late"); whatever the order
-- the records arrive in, the row ends with the outcome and any late reply.
INSERT INTO commands (command_id, charge_point_id, action, request, state, outcome, created_at,
                      sent_at, completed_at)
SELECT i, c, a, q::jsonb, st, o::jsonb, to_timestamp(coalesce(cr, 0) / 1000.0),
       to_timestamp(se / 1000.0), to_timestamp(co / 1000.0)
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::bigint[], $8::bigint[], $9::bigint[]) AS batch (i, c, a, q, st, o, cr, se, co)
ON CONFLICT (command_id) DO UPDATE SET
    state = EXCLUDED.state, outcome = EXCLUDED.outcome,
    sent_at = coalesce(EXCLUDED.sent_at, commands.sent_at),
    completed_at = EXCLUDED.completed_at
WHERE (commands.state IN ('queued', 'sent') AND EXCLUDED.state <> commands.state
       AND NOT (commands.state = 'sent' AND EXCLUDED.state = 'queued'))
   OR (EXCLUDED.outcome ? 'late' AND NOT coalesce(commands.outcome ? 'late', false));

-- name: partitions
-- The monthly partitions of meter_values, by name.
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'meter_values'::regclass AND c.relname ~ '^meter_values_\d{4}_\d{2}$';
