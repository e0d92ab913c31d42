-- For the operator console, which reads these every few seconds: the
-- energy of the sessions that ended today, the 2.0.1 sessions still open,
-- and the 2.0.1 listing in its order (latest started first, those without
-- a start last), which the start index alone cannot give without a sort.
-- Plain CREATE INDEX, as every migration is one transaction; on a large
-- history, create them CONCURRENTLY by hand first (IF NOT EXISTS keeps
-- this a no-op then).
CREATE INDEX IF NOT EXISTS transactions_by_stop ON transactions (stopped_at);
CREATE INDEX IF NOT EXISTS transactions_v201_by_stop ON transactions_v201 (stopped_at);
CREATE INDEX IF NOT EXISTS transactions_v201_open ON transactions_v201 (started_at)
    WHERE stopped_at IS NULL;
CREATE INDEX IF NOT EXISTS transactions_v201_listing
    ON transactions_v201 (started_at DESC NULLS LAST, charge_point_id DESC, transaction_id DESC);
