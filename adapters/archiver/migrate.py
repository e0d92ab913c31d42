"""Numbered SQL migrations (``migrations/NNNN_name.sql``), applied in order.

Each is applied in a transaction of its own and recorded in
``schema_migrations`` with the SHA-256 of its file, in the same transaction:
a migration is applied wholly or not at all. Every transaction first takes
an advisory lock, so replicas running ``ocpp-archiver migrate`` at once
apply each migration once; the others wait, then find it done. Running it
again applies nothing. A file changed after it was applied, or a migration
the database has and this version does not, stops it before it applies
anything: the schema would no longer be what the code expects.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

import msgspec

from adapters.archiver.connector import Database, Session
from adapters.archiver.sql import statements

_SQL = statements("migrate.sql")
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")
# Monthly partitions of meter_values created ahead of the current month.
PARTITIONS_AHEAD = 3


class MigrationRefused(Exception):
    """Raised when the database's recorded migrations disagree with the
    files: one was changed after it was applied, or is unknown here."""


class Migration(msgspec.Struct, frozen=True):
    version: int
    name: str  # the file's name without .sql: 0001_history
    sql: str
    checksum: str  # SHA-256 of the file, hex


def available() -> list[Migration]:
    """The migrations shipped with this package, by version."""
    found = []
    for entry in files(__package__).joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match is None:
            continue
        data = entry.read_bytes()
        found.append(
            Migration(
                version=int(match[1]),
                name=entry.name.removesuffix(".sql"),
                sql=data.decode(),
                checksum=hashlib.sha256(data).hexdigest(),
            )
        )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationRefused(f"two migration files share a version: {versions}")
    return found


def check(recorded: Sequence[Sequence[Any]], migrations: Sequence[Migration]) -> set[int]:
    """The versions ``recorded`` (version, name, checksum rows) holds, once
    each was found to match its file; raises ``MigrationRefused`` otherwise."""
    by_version = {m.version: m for m in migrations}
    for version, name, checksum in recorded:
        known = by_version.get(version)
        if known is None:
            raise MigrationRefused(
                f"the database has migration {name}, which this ocpp-archiver does not know:"
                " it is older than the schema; run a version that has it"
            )
        if known.checksum != checksum:
            raise MigrationRefused(
                f"migration {known.name}.sql was changed after it was applied"
                f" (applied {checksum[:12]}, file now {known.checksum[:12]}):"
                " restore it and put the change in a new migration"
            )
    return {row[0] for row in recorded}


async def _locked(session: Session, migrations: Sequence[Migration]) -> set[int]:
    """Takes the lock, and the versions already applied, checked."""
    await session.execute(_SQL["lock"])
    await session.execute(_SQL["create_table"])
    return check(await session.fetch(_SQL["applied"]), migrations)


async def migrate(
    database: Database, migrations: Sequence[Migration] | None = None
) -> list[Migration]:
    """Applies the ``migrations`` (by default those shipped) not yet
    applied, in order; returns those it applied."""
    migrations = available() if migrations is None else migrations
    applied: list[Migration] = []
    for migration in migrations:
        async with database.transaction() as session:
            # Read again under the lock: a replica may have applied it meanwhile.
            if migration.version in await _locked(session, migrations):
                continue
            await session.execute(migration.sql)
            await session.execute(
                _SQL["record"], migration.version, migration.name, migration.checksum
            )
            applied.append(migration)
    return applied


async def ensure_partitions(database: Database, ahead: int = PARTITIONS_AHEAD) -> list[str]:
    """Creates the monthly partitions of meter_values from this month to
    ``ahead`` months ahead that do not exist yet; returns their names. Needs
    the schema migrated."""
    async with database.transaction() as session:
        return [row[0] for row in await session.fetch(_SQL["ensure_partitions"], ahead)]
