"""The history schema (0001) on a real PostgreSQL: partitions and natural keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from adapters.archiver.asyncpg_connector import connect
from adapters.archiver.migrate import ensure_partitions, migrate

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(postgres_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a freshly migrated database."""
    database = await connect(postgres_db)
    try:
        await migrate(database)
        await ensure_partitions(database)
    finally:
        await database.close()
    connection = await asyncpg.connect(postgres_db)
    try:
        yield connection
    finally:
        await connection.close()


# The reading's position stands in for its content digest: records differing
# in it are different readings.
SAMPLE = """INSERT INTO meter_values (record_id, seq, sampled_at, reading_key, charge_point_id,
    connector_id, transaction_id, sampled_values)
    VALUES ($1, $2::int, $3, $2::int, 'CP-1', 1, 7, '[{"value": "1234.5",
        "measurand": "Energy.Active.Import.Register", "location": "Outlet", "unit": "Wh"}]')
    ON CONFLICT DO NOTHING"""


async def partition_of(db: asyncpg.Connection, record_id: str) -> str:
    return str(
        await db.fetchval(
            "SELECT tableoid::regclass FROM meter_values WHERE record_id = $1", record_id
        )
    )


async def test_samples_land_in_their_month_or_else_the_default_partition(
    db: asyncpg.Connection,
) -> None:
    now = datetime.now(UTC)
    await db.execute(SAMPLE, "1-0", 0, now)
    await db.execute(SAMPLE, "2-0", 0, datetime(1999, 1, 15, tzinfo=UTC))  # clock years off
    await db.execute(SAMPLE, "3-0", 0, datetime(2100, 6, 1, tzinfo=UTC))

    assert await partition_of(db, "1-0") == f"meter_values_{now:%Y_%m}"
    assert await partition_of(db, "2-0") == "meter_values_default"
    assert await partition_of(db, "3-0") == "meter_values_default"

    # Creating a month the default partition holds rows of moves them there.
    created = await db.fetch("SELECT meter_values_ensure_partitions('1999-01-20Z', 1) p")
    assert [r["p"] for r in created] == ["meter_values_1999_01"]
    assert await partition_of(db, "2-0") == "meter_values_1999_01"
    assert await db.fetchval("SELECT count(*) FROM meter_values") == 3


async def test_writing_the_same_records_again_doubles_nothing(db: asyncpg.Connection) -> None:
    when = datetime.now(UTC)
    inserts = [
        (SAMPLE, ("10-0", 0, when)),
        (SAMPLE, ("10-0", 1, when)),
        (SAMPLE, ("11-0", 0, datetime(1990, 1, 1, tzinfo=UTC))),  # default partition
        (
            """INSERT INTO transactions (charge_point_id, transaction_id, connector_id, id_tag,
               reservation_id, started_at, meter_start) VALUES ('CP-1', 7, 1, 'TAG', NULL, $1, 1000)
               ON CONFLICT DO NOTHING""",
            (when,),
        ),
        (
            """INSERT INTO charger_events (record_id, seq, charge_point_id, kind, occurred_at,
               connector_id, details) VALUES ('12-0', 0, 'CP-1', 'status', $1, 1,
               '{"status": "Charging", "errorCode": "NoError"}') ON CONFLICT DO NOTHING""",
            (when,),
        ),
        (
            """INSERT INTO commands (command_id, charge_point_id, action, request, state,
               created_at) VALUES ('c-1', 'CP-1', 'Reset', '{"type": "Soft"}', 'queued', $1)
               ON CONFLICT DO NOTHING""",
            (when,),
        ),
        (
            """INSERT INTO dead_letters (entry_id, charge_point_id, reason, envelope, dead_at)
               VALUES ('13-0', NULL, 'invalid envelope', '\\xff00'::bytea, $1)
               ON CONFLICT DO NOTHING""",
            (when,),
        ),
        (
            """INSERT INTO anomalies (record_id, seq, charge_point_id, kind, occurred_at, details)
               VALUES ('14-0', 0, 'CP-1', 'clock_skew', $1, '{"skew_s": 900}')
               ON CONFLICT DO NOTHING""",
            (when,),
        ),
    ]
    tables = ["meter_values", "transactions", "charger_events", "commands", "dead_letters",
              "anomalies"]  # fmt: skip
    counts = []
    for _ in range(2):  # a redelivered batch
        for sql, args in inserts:
            await db.execute(sql, *args)
        counts.append([await db.fetchval(f"SELECT count(*) FROM {t}") for t in tables])
    assert counts[0] == [3, 1, 1, 1, 1, 1]
    assert counts[1] == counts[0]


async def test_a_multi_row_insert_of_a_redelivered_batch_keeps_the_first_write(
    db: asyncpg.Connection,
) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rows = [("20-0", i, when, i, "CP-2", 1, None, f'[{{"value": "{i}", "format": "SignedData"}}]')
            for i in range(3)]  # fmt: skip
    columns = ("record_id", "seq", "sampled_at", "reading_key", "charge_point_id",
               "connector_id", "transaction_id", "sampled_values")  # fmt: skip
    insert = f"""INSERT INTO meter_values ({", ".join(columns)})
        SELECT r, s, t, k, c, n, x, v::json FROM unnest($1::text[], $2::int[],
            $3::timestamptz[], $4::bigint[], $5::text[], $6::int[], $7::int[], $8::text[])
            AS batch (r, s, t, k, c, n, x, v) ON CONFLICT DO NOTHING"""
    arrays = [list(column) for column in zip(*rows, strict=True)]
    assert await db.execute(insert, *arrays) == "INSERT 0 3"
    assert await db.execute(insert, *arrays) == "INSERT 0 0"


async def test_energy_is_meter_stop_minus_meter_start(db: asyncpg.Connection) -> None:
    await db.execute(
        """INSERT INTO transactions (charge_point_id, transaction_id, meter_start, meter_stop)
           VALUES ('CP-1', 8, 1000, 3500)"""
    )
    assert await db.fetchval("SELECT energy_wh FROM transactions WHERE transaction_id = 8") == 2500
