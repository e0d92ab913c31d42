"""The archiver on a real Redis and a real PostgreSQL, in process: writing
a batch twice, history out of order, entries PostgreSQL refuses."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError

from adapters.archiver.asyncpg_connector import AsyncpgDatabase, connect
from adapters.archiver.migrate import ensure_partitions, migrate
from adapters.archiver.service import HISTORY_DEAD, Archiver, Entry, outage
from adapters.archiver.writer import drop_expired
from adapters.devstack import wait_until
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


async def test_sampled_values_are_kept_byte_for_byte(
    redis: Redis, database: AsyncpgDatabase
) -> None:
    # Signed data is verified (OCMF) against what the charger sent: the row
    # holds the processor's text as it is, not a reformatted copy (as
    # jsonb's, with its spaces and its keys reordered, would be).
    ocmf = b'OCMF|{\\"FV\\":\\"1.0\\"}|{\\"SA\\":\\"x\\"}'
    signed = history.MeterReading(CP, 1, 7, T, b'[{"value":"' + ocmf + b'","format":"SignedData"}]')
    await Archiver(redis, database, "test").archive(await append(redis, [signed]))
    [row] = await fetch(database, "SELECT sampled_values::text FROM meter_values")
    assert row[0].encode() == signed.sampled_values


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
    assert b"not history" in aside[1][1][b"reason"]
    # The entry itself is kept, to be looked at and replayed.
    assert history.decode(aside[0][1][b"1-0"]) == [reading(2**40, "2")]
    assert archiver.set_aside == 2
    assert (await redis.xpending(keys.HISTORY, keys.ARCHIVERS))["pending"] == 0


async def test_an_id_past_int4_that_only_describes_a_row_is_left_out_of_it(
    redis: Redis, database: AsyncpgDatabase
) -> None:
    """A 2.0.1 station may number an EVSE or a remote start past
    PostgreSQL's integer: its session is still archived, without them."""
    big = 2**40
    started = history.TransactionEvent(
        "CS-1", "TX-big", 0, "Started", "RemoteStart", T, False, evse_id=big, connector_id=1,
        id_token="T1", id_token_type="Central", id_token_status="Accepted", charging_state=None,
        stopped_reason=None, remote_start_id=big, reservation_id=big, meter=1000,
    )  # fmt: skip
    status = history.ChargerEvent("CS-1", "status", T, big, {"connectorStatus": "Occupied"})
    archiver = Archiver(redis, database, "test")
    await archiver.archive(await append(redis, [started, status]))
    [row] = await fetch(database, "SELECT evse_id, connector_id, remote_start_id, reservation_id,"
                                  " id_token, meter_start FROM transactions_v201")  # fmt: skip
    assert tuple(row) == (None, 1, None, None, "T1", 1000)
    [event] = await fetch(database, "SELECT kind, connector_id FROM charger_events")
    assert tuple(event) == ("status", None)
    assert archiver.set_aside == 0 and await redis.xlen(HISTORY_DEAD) == 0


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


async def test_only_the_refused_message_of_an_entry_is_set_aside(
    redis: Redis, database: AsyncpgDatabase
) -> None:
    # One commit's entry holds the records of many chargers' messages: a
    # charger id too long for an index (PostgreSQL's program limit, not a
    # data error) refuses its own message's rows, not its neighbours'.
    # (Random, so that PostgreSQL cannot compress it into the index.)
    long_cp = history.MeterReading(secrets.token_hex(3000), 1, None, T, b'[{"value":"9"}]')
    await ensure_group(redis, keys.HISTORY, keys.ARCHIVERS)
    await redis.xadd(keys.HISTORY, {"1-0": history.encode([reading(7, "1")]),
                                    "1-1": history.encode([long_cp]),
                                    "1-2": history.encode([reading(7, "3")])})  # fmt: skip
    reply: Any = await redis.xreadgroup(keys.ARCHIVERS, "test", {keys.HISTORY: ">"})
    entries = [(i.decode(), {k.decode(): v for k, v in f.items()}) for i, f in reply[0][1]]
    archiver = Archiver(redis, database, "test")
    with anyio.fail_after(10):  # refused, not waited out as an outage
        await archiver.archive(entries)
    rows = await fetch(
        database, "SELECT sampled_values->0->>'value' v FROM meter_values ORDER BY v"
    )
    assert [r[0] for r in rows] == ["1", "3"]
    [(_, aside)] = await redis.xrange(HISTORY_DEAD)
    assert aside[b"field"] == b"1-1" and set(aside) == {b"reason", b"entry_id", b"field", b"1-1"}
    assert b"ProgramLimitExceeded" in aside[b"reason"]
    # Written alone or with the rest, a message's rows have the same keys.
    again = Archiver(redis, database, "again")
    await again.archive(entries)
    assert len(await fetch(database, "SELECT 1 FROM meter_values")) == 2


@pytest.mark.parametrize(("exc", "passes"), [
    (OSError("connection refused"), True),
    (asyncpg.CannotConnectNowError("starting up"), True),
    (asyncpg.UndefinedTableError("no meter_values: not migrated yet"), True),
    (asyncpg.InsufficientPrivilegeError("permission denied"), True),
    (asyncpg.DiskFullError("no space left"), True),
    (asyncpg.NumericValueOutOfRangeError("integer out of range"), False),
    (asyncpg.ProgramLimitExceededError("index row size exceeds maximum"), False),
    (asyncpg.UniqueViolationError("duplicate key"), False),
])  # fmt: skip
def test_what_is_waited_out_and_what_is_set_aside(exc: Exception, passes: bool) -> None:
    assert outage(exc) is passes


async def test_sigterm_with_postgresql_down_leaves_the_batch_pending(redis: Redis) -> None:
    # Nothing listens on this port: every write fails as an outage.
    database = await connect("postgresql://nobody@127.0.0.1:1/none", lazy=True)
    entries = await append(redis, [reading(7, "1")])
    archiver = Archiver(redis, database, "test")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(archiver.archive, entries)
            await wait_until(lambda: _true(archiver.database_down_since is not None))
            archiver.stop()
    await database.close()
    assert (await redis.xpending(keys.HISTORY, keys.ARCHIVERS))["pending"] == 1
    assert archiver.archived == 0


async def _true(value: bool) -> bool:
    return value


async def test_redis_out_of_memory_the_archiver_starts_and_drains_it(
    redis: Redis, database: AsyncpgDatabase
) -> None:
    # History piled up (PostgreSQL was down, say) until Redis's maxmemory:
    # the processors are refused; an archiver started now must still drain.
    n = 2000
    await ensure_group(redis, keys.HISTORY, keys.ARCHIVERS)
    for i in range(n):  # ~2 KB each, so that the stream is most of the memory used
        signed = reading(7, str(i), signedData="s" * 2000)
        await redis.xadd(keys.HISTORY, {f"{i}-0": history.encode([signed])})
    used = int((await redis.info("memory"))["used_memory"])
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", used - 1_000_000)
    try:
        with pytest.raises(OutOfMemoryError):
            await redis.xadd(keys.HISTORY, {"x": b"y"})
        archiver = Archiver(redis, database, "fresh", batch=64)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(archiver.run)

                async def drained() -> bool:
                    pending = (await redis.xpending(keys.HISTORY, keys.ARCHIVERS))["pending"]
                    trimmed = await redis.xlen(keys.HISTORY) <= 100  # one node is left
                    return archiver.archived >= n and pending == 0 and trimmed

                await wait_until(drained)
                archiver.stop()
        # Trimmed once archived: Redis takes writes again.
        assert await redis.xadd(keys.HISTORY, {"x": b"y"})
    finally:
        await redis.config_set("maxmemory", 0)
    assert len(await fetch(database, "SELECT 1 FROM meter_values")) == n


def event201(
    tid: str, seq: int, kind: str, meter: int | None = None, **facts: Any
) -> history.TransactionEvent:
    return history.TransactionEvent(
        facts.get("cp", CP), tid, seq, kind, "Authorized", f"2024-01-01T12:0{seq}:00.000000Z",
        facts.get("offline", False), facts.get("evse_id"), facts.get("connector_id"),
        facts.get("id_token"), "ISO14443" if facts.get("id_token") else None,
        "Accepted" if facts.get("id_token") else None, facts.get("charging_state"),
        facts.get("stopped_reason"), None, None, meter,
    )  # fmt: skip


def session201(tid: str) -> list[history.TransactionEvent]:
    """A 2.0.1 session's events in the order the station made them."""
    return [
        event201(tid, 0, "Started", 1000, evse_id=1, connector_id=1, id_token="T1"),
        event201(tid, 1, "Updated", charging_state="Charging"),
        event201(tid, 2, "Updated", offline=True, charging_state="SuspendedEV"),
        # Stopped with another card (StopAuthorized): the session's stays T1.
        event201(
            tid,
            3,
            "Ended",
            5000,
            stopped_reason="EVDisconnected",
            id_token="T2",
            charging_state="Idle",
        ),  # fmt: skip
    ]


async def test_201_sessions_converge_whatever_the_order_and_the_repeats(
    redis: Redis, database: AsyncpgDatabase
) -> None:
    archiver = Archiver(redis, database, "test")
    # In order, each event alone, the second twice (a retry), the first again.
    a = session201("TX-A")
    for records in ([a[0]], [a[1]], [a[1]], [a[2]], [a[3]], [a[0]]):
        await archiver.archive(await append(redis, records))
    # Backwards, all in one batch: the Ended first, the Started last.
    await archiver.archive(await append(redis, list(reversed(session201("TX-B")))))
    # The offline Updated only after the Ended, in a batch of its own.
    c = session201("TX-C")
    await archiver.archive(await append(redis, [c[3], c[0], c[1]]))
    await archiver.archive(await append(redis, [c[2]]))
    rows = await fetch(database, "SELECT transaction_id, evse_id, connector_id, id_token, "
                       "id_token_status, started_at, meter_start, stopped_at, meter_stop, "
                       "stopped_reason, energy_wh FROM transactions_v201 ORDER BY 1")  # fmt: skip
    assert [r[0] for r in rows] == ["TX-A", "TX-B", "TX-C"]
    sessions = {tuple(r)[1:] for r in rows}
    assert len(sessions) == 1, sessions
    [(evse, connector, token, status, started, m0, stopped, m1, reason, energy)] = sessions
    assert (evse, connector, token, status, m0, m1, reason, energy) == (
        1, 1, "T1", "Accepted", 1000, 5000, "EVDisconnected", 4000)  # fmt: skip
    assert (started.minute, stopped.minute) == (0, 3)
    counts = await fetch(database, "SELECT transaction_id, count(*), bool_or(offline) "
                         "FROM transaction_events GROUP BY 1 ORDER BY 1")  # fmt: skip
    assert [tuple(r) for r in counts] == [("TX-A", 4, True), ("TX-B", 4, True), ("TX-C", 4, True)]


async def test_201_meter_values_name_their_session_by_its_text_id(
    redis: Redis, database: AsyncpgDatabase
) -> None:
    values = msgspec.json.encode([{"value": 1.5, "unitOfMeasure": {"unit": "kWh"}}])
    readings = [history.MeterReading(CP, 1, "TX-A", T, values), reading(7, "1")]
    await Archiver(redis, database, "test").archive(await append(redis, readings))
    rows = await fetch(database, "SELECT transaction_id, transaction_ref FROM meter_values "
                       "ORDER BY transaction_ref NULLS LAST")  # fmt: skip
    assert [tuple(r) for r in rows] == [(None, "TX-A"), (7, None)]


def variable(origin: str, position: int, value: str | None, component: str = "OCPPCommCtrlr",
             variable: str = "HeartbeatInterval") -> history.VariableReported:  # fmt: skip
    return history.VariableReported(
        "CS-1", component, "", None, None, variable, "", "Actual", value, "ReadWrite",
        '{"dataType":"integer","unit":"s","supportsMonitoring":false}', "NotifyReport", origin,
        position, T,
    )  # fmt: skip


async def test_device_model_values_are_written_once_and_their_names_catalogued(
    redis: Redis, database: AsyncpgDatabase
) -> None:
    part = [variable("report:1:0", 0, "300"), variable("report:1:0", 1, None, "EVSE", "Power")]
    archiver = Archiver(redis, database, "test")
    await archiver.archive(await append(redis, part))
    # The station sent the part again; another station reports the same names.
    again = [variable("report:1:0", 0, "300"),
             history.VariableReported(**{**msgspec.structs.asdict(part[0]),
                                         "charge_point_id": "CS-2"})]  # fmt: skip
    await archiver.archive(await append(redis, again))
    rows = await fetch(database, "SELECT charge_point_id, origin, position, value, "
                       "characteristics->>'unit' FROM variable_values ORDER BY 1, 3")  # fmt: skip
    assert [tuple(r) for r in rows] == [
        ("CS-1", "report:1:0", 0, "300", "s"), ("CS-1", "report:1:0", 1, None, "s"),
        ("CS-2", "report:1:0", 0, "300", "s")]  # fmt: skip
    names = await fetch(database, "SELECT component, variable FROM device_variables ORDER BY 1")
    assert [tuple(r) for r in names] == [("EVSE", "Power"), ("OCPPCommCtrlr", "HeartbeatInterval")]
