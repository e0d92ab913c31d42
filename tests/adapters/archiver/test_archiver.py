"""The archiver on a real Redis and a real PostgreSQL, in process: writing
a batch twice, history out of order, entries PostgreSQL refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from adapters.archiver.asyncpg_connector import AsyncpgDatabase, connect
from adapters.archiver.migrate import ensure_partitions, migrate
from adapters.archiver.service import HISTORY_DEAD, Archiver, Entry
from adapters.archiver.writer import drop_expired
from processor import history, keys
from processor.redis_io import connect as connect_redis
from processor.redis_io import ensure_group

pytestmark = pytest.mark.anyio

CP = "CP-1"
T = "2024-01-01T12:00:00.000000Z"


@pytest.fixture
async def database(postgres_db: str) -> AsyncIterator[AsyncpgDatabase]:
    db = await connect(postgres_db)
    await migrate(db)
    await ensure_partitions(db)
    yield db
    await db.close()


@pytest.fixture
async def redis(redis_db: str) -> AsyncIterator[Redis]:
    client = connect_redis(redis_db)
    yield client
    await client.aclose()


async def fetch(db: AsyncpgDatabase, sql: str) -> list[Any]:
    async with db.transaction() as session:
        return await session.fetch(sql)


async def append(redis: Redis, *groups: list[history.Record]) -> list[Entry]:
    """Each group of records as one history entry, as a commit appends it;
    returns the entries as the group reads them."""
    await ensure_group(redis, keys.HISTORY, keys.ARCHIVERS)
    for n, records in enumerate(groups):
        await redis.xadd(keys.HISTORY, {f"{n}-0": history.encode(records)})
    reply: Any = await redis.xreadgroup(keys.ARCHIVERS, "test", {keys.HISTORY: ">"})
    return [(i.decode(), {k.decode(): v for k, v in f.items()}) for i, f in reply[0][1]]


def reading(tid: int | None, value: str, **attributes: str) -> history.MeterReading:
    values = msgspec.json.encode([{"value": value, "unit": "Wh", **attributes}])
    return history.MeterReading(CP, 1, tid, T, values)


async def test_a_batch_written_twice_is_in_the_database_once(
    redis: Redis, database: AsyncpgDatabase
) -> None:
    start = history.TransactionStarted(CP, 7, 1, "TAG", None, T, 100, "Accepted")
    event = history.ChargerEvent(CP, "BootNotification", T, None, {"vendor": "Acme"})
    dead = history.DeadLetter("9-0", None, "not JSON", b"\xff", T)
    entries = await append(redis, [start, reading(7, "1"), event], [reading(7, "2"), dead])
    archiver = Archiver(redis, database, "test")
    await archiver.archive(entries)
    # A redelivery: the archiver died between the commit and the XACK.
    await archiver.archive(entries)
    counts = await fetch(database, "SELECT (SELECT count(*) FROM meter_values), "
                         "(SELECT count(*) FROM transactions), "
                         "(SELECT count(*) FROM charger_events), "
                         "(SELECT count(*) FROM dead_letters)")  # fmt: skip
    assert tuple(counts[0]) == (2, 1, 1, 1)
    assert (await redis.xpending(keys.HISTORY, keys.ARCHIVERS))["pending"] == 0


async def test_a_sample_sent_twice_is_one_row_and_a_different_one_at_the_same_time_two(
    redis: Redis, database: AsyncpgDatabase
) -> None:
    # The charger retried its MeterValues under a new message id: another
    # inbound entry, another history record, the same samples.
    clock = reading(7, "1", context="Sample.Clock")
    entries = await append(redis, [reading(7, "1")], [reading(7, "1"), clock])
    await Archiver(redis, database, "test").archive(entries)
    first = "SELECT sampled_values->0->>'value', sampled_values->0->>'context' FROM meter_values"
    rows = await fetch(database, first + " ORDER BY 2 NULLS FIRST")
    assert [tuple(r) for r in rows] == [("1", None), ("1", "Sample.Clock")]


async def test_a_stop_archived_before_its_start_makes_one_whole_row(
    redis: Redis, database: AsyncpgDatabase
) -> None:
    stop = history.TransactionStopped(CP, 7, "2024-01-01T13:00:00.000000Z", 900, "Local", None)
    start = history.TransactionStarted(CP, 7, 1, "TAG", 3, T, 100, "Accepted")
    later = history.TransactionStopped(CP, 7, "2024-01-01T14:00:00.000000Z", 950, None, None)
    archiver = Archiver(redis, database, "test")
    for records in ([stop], [start], [later]):
        await archiver.archive(await append(redis, records))
    [row] = await fetch(database, "SELECT meter_start, meter_stop, energy_wh, reservation_id, "
                                  "stop_reason FROM transactions")  # fmt: skip
    assert tuple(row) == (100, 900, 800, 3, "Local")


async def test_an_entry_postgresql_refuses_is_set_aside_and_the_rest_written(
    redis: Redis, database: AsyncpgDatabase
) -> None:
    # A transactionId past PostgreSQL's integer: a charger may send one.
    entries = await append(redis, [reading(7, "1")], [reading(2**40, "2")], [reading(8, "3")])
    entries.append(("99-0", {"1-0": b"\xc1 not history"}))
    archiver = Archiver(redis, database, "test")
    await archiver.archive(entries)
    rows = await fetch(
        database, "SELECT sampled_values->0->>'value' v FROM meter_values ORDER BY v"
    )
    assert [r[0] for r in rows] == ["1", "3"]
    aside: Any = await redis.xrange(HISTORY_DEAD)
    assert [f[b"entry_id"] for _, f in aside] == [entries[1][0].encode(), b"99-0"]
    assert b"refused by PostgreSQL" in aside[0][1][b"reason"]
    assert b"not a history entry" in aside[1][1][b"reason"]
    # The entry itself is kept, to be looked at and replayed.
    assert history.decode(aside[0][1][b"1-0"]) == [reading(2**40, "2")]
    assert archiver.set_aside == 2
    assert (await redis.xpending(keys.HISTORY, keys.ARCHIVERS))["pending"] == 0


async def test_the_retention_drops_whole_old_months(
    database: AsyncpgDatabase, postgres_db: str
) -> None:
    connection = await asyncpg.connect(postgres_db)
    try:
        await connection.fetch("SELECT meter_values_ensure_partitions('2020-01-15T00:00:00Z', 2)")
    finally:
        await connection.close()
    dropped = await drop_expired(database, 12)
    assert dropped == ["meter_values_2020_01", "meter_values_2020_02"]
    tables = "SELECT tablename FROM pg_tables WHERE tablename LIKE 'meter_values_%'"
    names = [r[0] for r in await fetch(database, tables)]
    assert "meter_values_2020_01" not in names and "meter_values_default" in names
