"""``ocpp-archiver``: ``run`` writes the history stream to PostgreSQL
(``service.py``); ``migrate`` brings the database's schema up to date."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import anyio
import asyncpg
from opentelemetry import metrics

from adapters.archiver.asyncpg_connector import AsyncpgDatabase, connect
from adapters.archiver.migrate import MigrationRefused, ensure_partitions, migrate
from adapters.archiver.service import Archiver
from adapters.archiver.settings import ArchiverSettings
from adapters.archiver.writer import drop_expired
from processor.health import HealthServer, redis_probe
from processor.instances import registered
from processor.lifecycle import run_until_signalled
from processor.logs import redact, setup
from processor.redis_io import connect as connect_redis
from processor.redis_io import describe
from processor.settings import default_consumer_name, load
from processor.telemetry import Providers, configured

log = logging.getLogger("archiver")
# How often partitions are created ahead and the retention applied.
_MAINTENANCE_S = 3600.0


async def run_migrate(settings: ArchiverSettings) -> None:
    """Applies what is missing and says what it did, on stdout."""
    database = await connect(settings.database_url)
    try:
        applied = await migrate(database)
        partitions = await ensure_partitions(database)
    finally:
        await database.close()
    for migration in applied:
        sys.stdout.write(f"applied {migration.name}\n")
    if not applied:
        sys.stdout.write("nothing to apply: every migration is applied\n")
    if partitions:
        sys.stdout.write(f"created partitions {', '.join(partitions)}\n")


async def maintain(
    database: AsyncpgDatabase, settings: ArchiverSettings, archiver: Archiver
) -> None:
    """Partitions ahead and the retention, hourly, until the archiver stops."""
    while True:
        try:
            await ensure_partitions(database)
            if settings.retention_months:
                for name in await drop_expired(database, settings.retention_months):
                    log.info("dropped %s: past the retention of %d months", name,
                             settings.retention_months)  # fmt: skip
            delay = _MAINTENANCE_S
        except Exception as exc:  # the database down, most likely: again later
            log.warning("partition maintenance failed, retrying: %s", redact(describe(exc)))
            delay = 30.0
        await anyio.sleep(delay)


async def run_archiver(settings: ArchiverSettings, providers: Providers | None = None) -> None:
    if settings.nice:
        # History can wait; replies to chargers cannot. On a host it shares
        # with processors, the archiver takes the CPU they leave.
        os.nice(settings.nice)
    redis = connect_redis(settings.redis_url)
    database = await connect(settings.database_url, lazy=True)
    name = settings.consumer_name or default_consumer_name()
    archiver = Archiver(redis, database, name, batch=settings.archiver_batch,
                        claim_idle_ms=settings.claim_idle_ms)  # fmt: skip
    ready = redis_probe(redis)

    async def probe() -> str | None:
        if archiver.database_down_since is not None:
            return f"postgresql unavailable: {archiver.database_error}"
        return await ready()

    _metrics(archiver, providers)
    health = HealthServer(probe, settings.health_port)

    async def run() -> None:
        if settings.migrate:
            await _migrate_when_up(database)
        async with anyio.create_task_group() as tg:
            tg.start_soon(maintain, database, settings, archiver)
            tg.start_soon(_watch_backlog, archiver)
            await registered(redis, "archiver", health, archiver.run, consumer=name)
            tg.cancel_scope.cancel()

    log.info("archiver %s starting", name)
    try:
        await run_until_signalled(run, archiver.stop, log)
    finally:
        await redis.aclose()
        await database.close()
    log.info("archiver %s stopped after %d entries (%d rows)", name, archiver.archived,
             archiver.rows)  # fmt: skip


async def _migrate_when_up(database: AsyncpgDatabase) -> None:
    while True:
        try:
            for migration in await migrate(database):
                log.info("applied migration %s", migration.name)
            return
        except MigrationRefused as exc:
            raise SystemExit(f"ocpp-archiver run: migrations refused: {exc}") from None
        except Exception as exc:  # the database not up yet
            log.warning("cannot migrate yet, retrying: %s", redact(describe(exc)))
            await anyio.sleep(2.0)


async def _watch_backlog(archiver: Archiver) -> None:
    """Reads the backlog every second for the lag gauge, whose callback
    cannot await; Redis down, the last reading stands (the loop says so)."""
    while True:
        try:
            lag, pending = await archiver.backlog()
            archiver.last_backlog = (lag or 0) + (pending or 0)
        except Exception:
            pass
        await anyio.sleep(1.0)


def _metrics(archiver: Archiver, providers: Providers | None) -> None:
    meter = (providers.meter_provider if providers else metrics.get_meter_provider()).get_meter(
        "ocpp.archiver"
    )
    meter.create_observable_gauge(
        "ocpp.archiver.lag",
        [lambda _: [metrics.Observation(archiver.last_backlog)]],
        "{entry}",
        "history entries not yet written to PostgreSQL",
    )
    meter.create_observable_counter(
        "ocpp.archiver.rows", [lambda _: [metrics.Observation(archiver.rows)]], "{row}",
        "rows written to PostgreSQL",
    )  # fmt: skip
    meter.create_observable_counter(
        "ocpp.archiver.set_aside", [lambda _: [metrics.Observation(archiver.set_aside)]],
        "{entry}", "history entries PostgreSQL refused, kept on ocpp:history:dead",
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ocpp-archiver",
        description="Writes history to PostgreSQL. `ocpp-archiver COMMAND --help` lists settings.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    # Its settings are parsed by load(), as every service's are.
    commands.add_parser("run", add_help=False, help="write the history stream to PostgreSQL")
    commands.add_parser("migrate", add_help=False, help="apply the schema's migrations")
    known, rest = parser.parse_known_args(argv)
    prog = f"ocpp-archiver {known.command}"
    settings = load(ArchiverSettings, rest, prog=prog)
    if known.command == "run":
        setup(settings.log_level, "archiver")
        with configured("ocpp-archiver") as providers:
            anyio.run(run_archiver, settings, providers, backend="asyncio")
        return
    try:
        anyio.run(run_migrate, settings, backend="asyncio")
    except MigrationRefused as exc:
        sys.exit(f"{prog}: refused: {exc}")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        sys.exit(f"{prog}: {redact(settings.database_url)}: {redact(str(exc))}")


if __name__ == "__main__":
    main()
