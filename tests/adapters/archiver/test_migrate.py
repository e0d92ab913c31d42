"""``ocpp-archiver migrate`` on a real PostgreSQL (``postgres_db``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import AsyncIterator

import anyio
import asyncpg
import msgspec
import pytest

from adapters.archiver.asyncpg_connector import AsyncpgDatabase, connect
from adapters.archiver.migrate import (
    PARTITIONS_AHEAD,
    Migration,
    MigrationRefused,
    available,
    ensure_partitions,
    migrate,
)
from adapters.devstack import console_script, wait_until

TABLES = {
    "schema_migrations": "r",
    "transactions": "r",
    "meter_values": "p",  # partitioned
    "meter_values_default": "r",
    "charger_events": "r",
    "commands": "r",
    "dead_letters": "r",
    "anomalies": "r",
}
LOCK = "hashtext('ocpp-archiver migrate')"


@pytest.fixture
async def database(postgres_db: str) -> AsyncIterator[AsyncpgDatabase]:
    db = await connect(postgres_db)
    try:
        yield db
    finally:
        await db.close()


def archiver_migrate(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [console_script("ocpp-archiver"), "migrate", *args],
        env={**os.environ, "DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def fetch(url: str, sql: str) -> list[asyncpg.Record]:
    """The rows of ``sql``, on a connection of its own."""
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetch(sql)
    finally:
        await connection.close()


@pytest.mark.anyio
async def test_an_empty_database_gets_every_table_and_this_months_partitions(
    database: AsyncpgDatabase, postgres_db: str
) -> None:
    applied = await migrate(database)
    created = await ensure_partitions(database)

    assert [m.name for m in applied] == [m.name for m in available()]
    assert applied[0].name == "0001_history"
    kinds = await fetch(
        postgres_db,
        "SELECT relname, relkind::text FROM pg_class WHERE relnamespace = 'public'::regnamespace",
    )
    assert TABLES.items() <= {(r["relname"], r["relkind"]) for r in kinds}
    (month,) = await fetch(postgres_db, "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM') m")
    assert len(created) == PARTITIONS_AHEAD + 1
    assert created[0] == f"meter_values_{month['m']}"
    recorded = await fetch(postgres_db, "SELECT version, name, checksum FROM schema_migrations")
    assert [tuple(r) for r in recorded] == [(m.version, m.name, m.checksum) for m in available()]


@pytest.mark.anyio
async def test_a_second_run_applies_nothing(database: AsyncpgDatabase) -> None:
    await migrate(database)
    await ensure_partitions(database)
    assert await migrate(database) == []
    assert await ensure_partitions(database) == []


def test_the_command_says_what_it_applied_then_that_nothing_was_left(postgres_db: str) -> None:
    first = archiver_migrate(postgres_db)
    out, err = first.communicate(timeout=30)
    assert first.returncode == 0, err
    lines = out.splitlines()
    assert lines[:-1] == [f"applied {m.name}" for m in available()]
    assert lines[-1].startswith("created partitions meter_values_")

    second = archiver_migrate("postgresql://nobody@127.0.0.1:1/x", "--database-url", postgres_db)
    out, err = second.communicate(timeout=30)  # the flag wins over DATABASE_URL
    assert second.returncode == 0, err
    assert out == "nothing to apply: every migration is applied\n"


@pytest.mark.slow
def test_two_replicas_at_once_apply_it_once(postgres_db: str) -> None:
    async def hold_lock_until_both_wait() -> tuple[subprocess.Popen[str], ...]:
        # The test holds the lock, so both must queue behind it: a real race
        # for it when it is released, not one replica done before the other starts.
        connection = await asyncpg.connect(postgres_db)
        try:
            await connection.execute(f"SELECT pg_advisory_lock({LOCK})")
            replicas = archiver_migrate(postgres_db), archiver_migrate(postgres_db)
            waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"

            async def both_wait() -> bool:
                assert all(r.poll() is None for r in replicas), "a replica exited early"
                return bool(await connection.fetchval(waiting) >= 2)

            with anyio.fail_after(30):  # both replicas wait for the lock
                await wait_until(both_wait)
            await connection.execute(f"SELECT pg_advisory_unlock({LOCK})")
        finally:
            await connection.close()
        return replicas

    replicas = asyncio.run(hold_lock_until_both_wait())
    outputs = [r.communicate(timeout=30) for r in replicas]
    assert [r.returncode for r in replicas] == [0, 0], outputs
    # Each migration is applied by one replica, either of them: each
    # migration takes the lock apart, so the second may win the next one.
    applied = [
        line for out, _ in outputs for line in out.splitlines() if line.startswith("applied ")
    ]
    assert sorted(applied) == [f"applied {m.name}" for m in available()]
    rows = asyncio.run(fetch(postgres_db, "SELECT version FROM schema_migrations"))
    assert [r["version"] for r in rows] == [m.version for m in available()]


@pytest.mark.anyio
async def test_a_migration_changed_after_it_was_applied_is_refused(
    database: AsyncpgDatabase, postgres_db: str
) -> None:
    await migrate(database)
    first, *rest = available()
    changed = first.sql + "\nCREATE TABLE sneaked_in (x int);\n"
    edited = msgspec.structs.replace(first, sql=changed, checksum="0" * 64)
    later = Migration(99, "0099_later", "CREATE TABLE later (x int);", "1" * 64)

    with pytest.raises(
        MigrationRefused, match=r"0001_history\.sql was changed after it was applied"
    ):
        await migrate(database, [edited, *rest, later])
    # Refused before applying anything, the later migration included.
    tables = await fetch(postgres_db, "SELECT to_regclass('later') l, to_regclass('sneaked_in') s")
    assert tuple(tables[0]) == (None, None)


def test_the_command_refuses_a_changed_migration_and_exits_1(postgres_db: str) -> None:
    first = archiver_migrate(postgres_db)
    first.communicate(timeout=30)
    assert first.returncode == 0
    asyncio.run(fetch(postgres_db, "UPDATE schema_migrations SET checksum = 'edited'"))
    refused = archiver_migrate(postgres_db)
    _, err = refused.communicate(timeout=30)
    assert refused.returncode == 1
    assert "refused: migration 0001_history.sql was changed after it was applied" in err


@pytest.mark.anyio
async def test_a_database_ahead_of_this_version_is_refused(database: AsyncpgDatabase) -> None:
    await migrate(database)
    async with database.transaction() as session:
        await session.execute("INSERT INTO schema_migrations VALUES (9999, '9999_future', 'x')")
    with pytest.raises(MigrationRefused, match="9999_future, which this ocpp-archiver does not"):
        await migrate(database)
