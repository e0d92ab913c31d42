"""The archiver's ``Database`` on asyncpg.

asyncpg speaks PostgreSQL's binary protocol itself (no libpq), and writes
batches with binary COPY (``copy_records_to_table``), which the writer will use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg


class AsyncpgSession:
    """A ``Session`` on one asyncpg connection."""

    def __init__(self, connection: asyncpg.pool.PoolConnectionProxy[asyncpg.Record]) -> None:
        self._connection = connection

    async def execute(self, sql: str, *args: object) -> None:
        # Without args asyncpg uses the simple query protocol, which takes
        # several statements in one string (a migration file).
        await self._connection.execute(sql, *args)

    async def fetch(self, sql: str, *args: object) -> list[Sequence[Any]]:
        return [tuple(row.values()) for row in await self._connection.fetch(sql, *args)]


class AsyncpgDatabase:
    """A ``Database`` on an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncpgSession]:
        async with self._pool.acquire() as connection, connection.transaction():
            yield AsyncpgSession(connection)

    async def close(self) -> None:
        await self._pool.close()


async def connect(
    url: str, max_size: int = 4, connect_timeout_s: float = 10.0, *, lazy: bool = False
) -> AsyncpgDatabase:
    """A pool on ``url`` (postgresql://...), one connection opened to check
    it; ``lazy``, none until the first transaction (the database may be down)."""
    # command_timeout: a write that hangs (a network partition nobody
    # resets) fails after a minute and is retried, rather than never.
    pool = await asyncpg.create_pool(
        url, min_size=0 if lazy else 1, max_size=max_size, timeout=connect_timeout_s,
        command_timeout=60,
    )  # fmt: skip
    return AsyncpgDatabase(pool)
