-- OCPP 2.0.1 sessions. Their transactionId is the station's text (up to 36
-- characters), where 1.6's is an integer we hand out: a table of their own
-- rather than 1.6's key turned to text, which would order and page 1.6's
-- ids as text ("10" before "9").
--
-- A session is told as events (Started, Updated, Ended), each numbered by
-- the station (seqNo), which arrive late, twice (a retry under a new
-- message id) or out of order (an offline queue). Each event is one row of
-- transaction_events, keyed by (station, transactionId, seqNo): written
-- twice, it is there once. The session's row takes what each event says of
-- it: its start and end where still empty, its EVSE and idToken from the
-- lowest seqNo naming them (evse_seq, id_token_seq), whatever order the
-- events are archived in; an Ended is always applied, and nothing a later
-- Updated says reopens it.
CREATE TABLE transactions_v201 (
    charge_point_id text NOT NULL,
    transaction_id text NOT NULL,
    evse_id integer,
    connector_id integer,
    evse_seq bigint,  -- the seqNo of the event that named the EVSE
    id_token text,
    id_token_type text,
    id_token_status text,  -- what we answered for the token (Accepted, Blocked, ...)
    id_token_seq bigint,  -- the seqNo of the event that named the token
    remote_start_id integer,
    reservation_id integer,
    started_at timestamptz,
    meter_start bigint,  -- Wh: the energy register of the Started event's Transaction.Begin reading
    stopped_at timestamptz,
    meter_stop bigint,  -- Wh: of the Ended event's Transaction.End reading
    stopped_reason text,
    energy_wh bigint GENERATED ALWAYS AS (meter_stop - meter_start) STORED,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (charge_point_id, transaction_id)
);
CREATE INDEX transactions_v201_by_charger ON transactions_v201 (charge_point_id, started_at DESC);
CREATE INDEX transactions_v201_by_id_token ON transactions_v201 (id_token, started_at DESC);
CREATE INDEX transactions_v201_by_start ON transactions_v201 (started_at);

CREATE TABLE transaction_events (
    charge_point_id text NOT NULL,
    transaction_id text NOT NULL,
    seq_no bigint NOT NULL,
    event_type text NOT NULL,  -- Started, Updated, Ended
    trigger_reason text NOT NULL,
    occurred_at timestamptz NOT NULL,
    offline boolean NOT NULL,  -- queued while the station was offline
    charging_state text,
    id_token text,
    -- Where the row came from, for support questions.
    record_id text NOT NULL,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (charge_point_id, transaction_id, seq_no)
);

-- A 2.0.1 session's meter values name it by its text id; 1.6's keep the
-- integer column. Added without a default: no partition is rewritten.
ALTER TABLE meter_values ADD COLUMN transaction_ref text;
CREATE INDEX meter_values_by_transaction_ref ON meter_values (transaction_ref, sampled_at)
    WHERE transaction_ref IS NOT NULL;
