-- The history a CPO keeps for billing, support and analytics.
--
-- Every row comes from one record of the history stream and carries a
-- natural key derived from that record alone, so the archiver can write a
-- redelivered or re-claimed batch again with INSERT ... ON CONFLICT DO NOTHING
-- and no row doubles. Where a row has no key of its own in OCPP (events,
-- anomalies), the key is the stream entry id of the record it came from
-- (record_id, "1718000000000-0") and its position within it (seq): a record
-- is appended once, in the processor's atomic commit, and keeps its id
-- through every redelivery. Meter values are keyed by their content.
--
-- Times are the charger's (timestamptz, UTC); archived_at is when the row
-- reached the database, for lag and support questions.

-- One row per charging session. OCPP's own key: the transactionId the
-- central system handed out, which a charger quotes in its stop and its
-- meter values. Ours come from one counter (ocpp:txn:seq) and are unique
-- across chargers, but the key keeps the charger so history imported from
-- another central system, with ids of its own, cannot collide.
CREATE TABLE transactions (
    charge_point_id text NOT NULL,
    transaction_id integer NOT NULL,
    connector_id integer,
    id_tag text,
    reservation_id integer,
    -- Start columns may be null: a StopTransaction can reach us for a
    -- session whose start we never saw (the charger was offline, or its
    -- start predates the archive), and the stop is still billed.
    started_at timestamptz,
    meter_start bigint,  -- Wh, as OCPP 1.6 sends it (an integer)
    stopped_at timestamptz,
    meter_stop bigint,
    stop_reason text,
    stop_id_tag text,
    energy_wh bigint GENERATED ALWAYS AS (meter_stop - meter_start) STORED,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (charge_point_id, transaction_id)
);
-- GET /v1/transactions/{id} has the id alone.
CREATE INDEX transactions_by_id ON transactions (transaction_id);
-- A charger's sessions, newest first; and a card's (billing, support).
CREATE INDEX transactions_by_charger ON transactions (charge_point_id, started_at DESC);
CREATE INDEX transactions_by_id_tag ON transactions (id_tag, started_at DESC);
-- Sessions in a period, for exports.
CREATE INDEX transactions_by_start ON transactions (started_at);

-- Every meterValue a charger sent, with all its sampled values: the bulk of
-- the history. One row per meterValue (its timestamp), its sampled values
-- the JSON array OCPP sends (value, context, format, measurand, phase,
-- location, unit; attributes the charger left out left out, signed data
-- byte for byte for verification (OCMF) later), as CitrineOS keeps them: a
-- MeterValues of seven samples is one row and one index entry per index,
-- not seven. Read them a sample a row with jsonb_array_elements.
-- Partitioned by month of the timestamp, so retention drops a whole
-- partition instead of deleting rows, and "charger X between t1 and t2"
-- reads only the months it spans.
--
-- Keyed by content, not by the record it came from: a charger that sends
-- the same MeterValues again (its retry under a new message id, a
-- ws-server delivering a frame twice) adds no second row, while two
-- different readings at the same instant (a clock-aligned and a periodic
-- one, a stop's Transaction.End reading) are both kept. reading_key is a
-- 64-bit digest of the sampled values and the transactionId, beside the
-- charger, connector and time, which the key holds as they are.
CREATE TABLE meter_values (
    charge_point_id text NOT NULL,
    connector_id integer NOT NULL,
    sampled_at timestamptz NOT NULL,  -- the meterValue's timestamp
    reading_key bigint NOT NULL,
    transaction_id integer,  -- null for readings outside a session (clock-aligned)
    sampled_values jsonb NOT NULL,
    -- Where the row came from: the history stream entry and the position
    -- in it, for support questions.
    record_id text NOT NULL,
    seq integer NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    -- A key on a partitioned table must hold the partition key: sampled_at.
    PRIMARY KEY (charge_point_id, connector_id, sampled_at, reading_key)
) PARTITION BY RANGE (sampled_at);
-- Samples of transaction N (its curve, its bill): one probe per partition.
CREATE INDEX meter_values_by_transaction ON meter_values (transaction_id, sampled_at)
    WHERE transaction_id IS NOT NULL;
-- Samples of charger X between t1 and t2: the key, its charger first, in the
-- partitions the range spans (a charger's few connectors each scanned).
-- Whatever no monthly partition covers (a charger whose clock is years off,
-- a month not created yet) lands here rather than being refused: a refused
-- row would stop the archiver's batch. meter_values_ensure_partitions moves
-- such rows out when it creates their month.
CREATE TABLE meter_values_default PARTITION OF meter_values DEFAULT;

-- Creates the monthly partitions of meter_values for the `months` months
-- starting with the one holding `from_time` (UTC months), moving any rows the
-- default partition holds for them. Replicas may call it at once: it takes a
-- transaction-scoped advisory lock. Returns the partitions it created.
CREATE FUNCTION meter_values_ensure_partitions(from_time timestamptz, months integer)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz;
    month_end timestamptz;
    part text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ocpp-archiver meter_values partitions'));
    FOR i IN 0 .. months - 1 LOOP
        month_start := (date_trunc('month', from_time AT TIME ZONE 'UTC')
                        + make_interval(months => i)) AT TIME ZONE 'UTC';
        month_end := ((month_start AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
        part := 'meter_values_' || to_char(month_start AT TIME ZONE 'UTC', 'YYYY_MM');
        CONTINUE WHEN to_regclass(part) IS NOT NULL;
        -- Created apart and attached: attaching checks the default partition
        -- holds nothing of the month, so its rows move first.
        EXECUTE format('CREATE TABLE %I (LIKE meter_values INCLUDING DEFAULTS)', part);
        EXECUTE format(
            'WITH moved AS (DELETE FROM meter_values_default'
            ' WHERE sampled_at >= %L AND sampled_at < %L RETURNING *)'
            ' INSERT INTO %I SELECT * FROM moved', month_start, month_end, part);
        EXECUTE format('ALTER TABLE meter_values ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       part, month_start, month_end);
        RETURN NEXT part;
    END LOOP;
END
$$;

-- Boots, status changes, notifications (firmware, diagnostics), security
-- events: what support reads about a charger, in order. What differs by
-- kind stays in details, as the charger sent it.
CREATE TABLE charger_events (
    record_id text NOT NULL,
    seq integer NOT NULL,
    charge_point_id text NOT NULL,
    kind text NOT NULL,  -- boot, status, firmware_status, diagnostics_status, security_event, ...
    occurred_at timestamptz NOT NULL,
    connector_id integer,  -- for status changes; null for the charger as a whole
    details jsonb NOT NULL DEFAULT '{}',
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (record_id, seq)
);
-- A charger's events, newest first (support); one kind across chargers.
CREATE INDEX charger_events_by_charger ON charger_events (charge_point_id, occurred_at DESC);
CREATE INDEX charger_events_by_kind ON charger_events (kind, occurred_at DESC);

-- Commands the central system sent a charger and how each ended. The
-- command id is ours, unique, and follows the command from queued to its
-- outcome: later states update the row it keys.
CREATE TABLE commands (
    command_id text PRIMARY KEY,
    charge_point_id text NOT NULL,
    action text NOT NULL,
    request jsonb NOT NULL,
    state text NOT NULL,  -- queued, sent, answered, failed, timed_out
    outcome jsonb,  -- the charger's answer or error, when there is one
    created_at timestamptz NOT NULL,
    sent_at timestamptz,
    completed_at timestamptz,
    archived_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX commands_by_charger ON commands (charge_point_id, created_at DESC);

-- Input the processor could not handle (ocpp:dead): kept verbatim, as bytes,
-- since it may not even be UTF-8. Keyed by the entry id of the inbound
-- message, which is dead-lettered once.
CREATE TABLE dead_letters (
    entry_id text PRIMARY KEY,
    charge_point_id text,  -- when the envelope said
    reason text NOT NULL,
    envelope bytea NOT NULL,
    dead_at timestamptz NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_by_time ON dead_letters (dead_at);

-- Odd but accepted input (ocpp:anomalies): clocks far ahead, a second
-- different stop, and the like.
CREATE TABLE anomalies (
    record_id text NOT NULL,
    seq integer NOT NULL,
    charge_point_id text,  -- null when the anomaly concerns a key, not a charger
    kind text NOT NULL,
    occurred_at timestamptz NOT NULL,
    details jsonb NOT NULL DEFAULT '{}',
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (record_id, seq)
);
CREATE INDEX anomalies_by_charger ON anomalies (charge_point_id, occurred_at DESC);
