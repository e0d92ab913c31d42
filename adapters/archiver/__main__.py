"""``ocpp-archiver``: ``migrate`` brings the database's schema up to date."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import anyio
import asyncpg

from adapters.archiver.asyncpg_connector import connect
from adapters.archiver.migrate import MigrationRefused, ensure_partitions, migrate
from adapters.archiver.settings import ArchiverSettings
from processor.logs import redact
from processor.settings import load


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="ocpp-archiver",
        description="Writes history to PostgreSQL. `ocpp-archiver COMMAND --help` lists settings.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    # Its settings are parsed by load(), as every service's are.
    commands.add_parser("migrate", add_help=False, help="apply the schema's migrations")
    known, rest = parser.parse_known_args(argv)
    prog = f"ocpp-archiver {known.command}"
    settings = load(ArchiverSettings, rest, prog=prog)
    try:
        anyio.run(run_migrate, settings, backend="asyncio")
    except MigrationRefused as exc:
        sys.exit(f"{prog}: refused: {exc}")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        sys.exit(f"{prog}: {redact(settings.database_url)}: {redact(str(exc))}")


if __name__ == "__main__":
    main()
