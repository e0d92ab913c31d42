-- The statements of `ocpp-archiver migrate` (adapters/archiver/migrate.py),
-- each under a "-- name:" line.

-- name: lock
-- Every replica's migrate takes this first, in each of its transactions:
-- the second waits, then finds the work done. Released at commit.
SELECT pg_advisory_xact_lock(hashtext('ocpp-archiver migrate'));

-- name: create_table
-- The one table no migration creates: it records them.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,  -- SHA-256 of the file as applied
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied
SELECT version, name, checksum FROM schema_migrations ORDER BY version;

-- name: record
INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3);

-- name: ensure_partitions
-- This month's partition of meter_values and the next $1 months'.
SELECT meter_values_ensure_partitions(now(), $1 + 1);
