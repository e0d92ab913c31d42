"""Writes gathered rows (``rows.py``) in one database transaction, and keeps
meter_values' partitions: created ahead, dropped past the retention."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from adapters.archiver.connector import Database, Session
from adapters.archiver.rows import Columns, Rows
from adapters.archiver.sql import statements

_SQL = statements("write.sql")


def _columns(rows: Iterable[tuple[Any, ...]], width: int) -> tuple[list[Any], ...]:
    columns = Columns(width)
    for row in rows:
        columns.add(*row)
    return columns.columns


async def write(session: Session, rows: Rows) -> None:
    """Every row of ``rows``, in ``session``'s transaction. Starts go before
    stops, so a session started and stopped in one batch has both."""
    if rows.meter_values:
        await session.execute(_SQL["meter_values"], *rows.meter_values.columns)
    if rows.starts:
        await session.execute(_SQL["starts"], *_columns(rows.starts.values(), 8))
    if rows.stops:
        await session.execute(_SQL["stops"], *_columns(rows.stops.values(), 6))
    if rows.transaction_events:
        await session.execute(_SQL["transaction_events"], *rows.transaction_events.columns)
    if rows.sessions:
        sessions = (s.row() for s in rows.sessions.values())
        await session.execute(_SQL["sessions"], *_columns(sessions, 16))
    if rows.variable_values:
        names = sorted(rows.variable_names)  # sorted: concurrent writers lock in one order
        await session.execute(_SQL["variable_names"], *_columns(names, 4))
        await session.execute(_SQL["variable_values"], *rows.variable_values.columns)
    if rows.events:
        await session.execute(_SQL["events"], *rows.events.columns)
    if rows.anomalies:
        await session.execute(_SQL["anomalies"], *rows.anomalies.columns)
    if rows.dead_letters:
        await session.execute(_SQL["dead_letters"], *_columns(rows.dead_letters.values(), 5))
    if rows.commands:
        await session.execute(_SQL["commands"], *_columns(rows.commands.values(), 9))


def expired(partitions: Iterable[str], retention_months: int, now: datetime) -> list[str]:
    """The monthly partitions (``meter_values_YYYY_MM``) wholly older than
    the ``retention_months`` months before ``now``'s month."""
    keep_from = now.year * 12 + now.month - 1 - retention_months
    out = []
    for name in partitions:
        year, month = name.removeprefix("meter_values_").split("_")
        if int(year) * 12 + int(month) - 1 < keep_from:
            out.append(name)
    return sorted(out)


async def drop_expired(database: Database, retention_months: int) -> list[str]:
    """Drops meter_values partitions past the retention; returns their names.
    A whole month goes at once, which is why the table is partitioned."""
    async with database.transaction() as session:
        names = [row[0] for row in await session.fetch(_SQL["partitions"])]
        dropped = expired(names, retention_months, datetime.now(UTC))
        for name in dropped:
            # The name matched ^meter_values_\d{4}_\d{2}$: safe to splice.
            await session.execute(f'DROP TABLE IF EXISTS "{name}"')
    return dropped
