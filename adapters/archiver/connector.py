"""What the archiver needs of a PostgreSQL driver, and nothing more.

``asyncpg_connector`` implements it. Code above it (migrations, and the
writer to come) sees only these Protocols, so a second driver would be one
more module beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol


class Session(Protocol):
    """One connection inside one transaction."""

    async def execute(self, sql: str, *args: object) -> None:
        """Run ``sql``. Without ``args`` it may hold several statements
        (a migration file); with them it is one statement, ``$1``, ``$2``..."""

    async def fetch(self, sql: str, *args: object) -> list[Sequence[Any]]:
        """The rows ``sql`` returns, each a sequence of column values."""


class Database(Protocol):
    """A pool of connections to one database."""

    def transaction(self) -> AbstractAsyncContextManager[Session]:
        """A session whose work commits when the block ends, or rolls back
        if it raises."""

    async def close(self) -> None:
        """Close every connection."""
