"""The history database as the API and ``ocpp-cli`` read it: an asyncpg
pool behind :class:`History`, and what counts as the database being
unavailable (``HistoryUnavailable``, a 503 or exit code 3) rather than a
bug. Messages name the database with its password masked (:func:`shown`).
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlsplit

import asyncpg

from processor.logs import redact

NOT_CONFIGURED = "history needs DATABASE_URL (the PostgreSQL ocpp-archiver writes to)"


class Row(Protocol):
    """A row by column name: an asyncpg Record, or a dict in a test."""

    def __getitem__(self, key: str, /) -> Any: ...


class HistoryUnavailable(Exception):
    """Raised when history is asked for and no database is configured, or
    it cannot be reached or read; the message names it, password masked."""


# --- the database ------------------------------------------------------------

# What says the database, not the query, is at fault: unreachable, refusing
# us, restarting, or without the schema ocpp-archiver migrate creates.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, unreachable, timed out
    asyncpg.InterfaceError,  # a bad DSN, a connection closed under us
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # starting up, shutting down, query cancelled
    asyncpg.InvalidAuthorizationSpecificationError,  # wrong user or password
    asyncpg.InvalidCatalogNameError,  # no such database
    asyncpg.InsufficientResourcesError,  # too many connections
    asyncpg.InsufficientPrivilegeError,
    asyncpg.UndefinedTableError,  # not migrated
    asyncpg.UndefinedColumnError,  # migrated by an older ocpp-archiver
)


def check_url(url: str) -> None:
    """Refuse a ``DATABASE_URL`` that is not a PostgreSQL URL, quoting none
    of it (a password may be what broke it); empty is fine (no history)."""
    if not url:
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsing it is the check)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(
            "DATABASE_URL is not a valid postgresql:// URL "
            "(percent-encode / ? # @ : % in its user name and password)"
        )


def shown(url: str) -> str:
    """``url`` as a message may show it: scheme, user, host, port and
    database; its password masked and its query (which may carry one) left
    out. For a URL :func:`check_url` accepted."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port else ""
    user = parts.username or ""
    user = f"{user}:***@" if parts.password is not None else f"{user}@" if user else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


class History:
    """The history database, or its absence (``url`` empty). The pool opens
    connections as reads need them: none at start, so PostgreSQL may be
    down then; a read while it is raises :class:`HistoryUnavailable`."""

    def __init__(self, url: str, max_size: int = 8, connect_timeout_s: float = 5.0) -> None:
        self.url = url
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._max_size = max_size
        self._connect_timeout_s = connect_timeout_s
        check_url(url)

    @property
    def configured(self) -> bool:
        return bool(self.url)

    async def open(self) -> History:
        if self.url and self._pool is None:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=0, max_size=self._max_size, timeout=self._connect_timeout_s,
                command_timeout=30,
            )  # fmt: skip
        return self

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        """The rows of one statement; :class:`HistoryUnavailable` if there is
        no database or it does not answer."""
        if self._pool is None:
            raise HistoryUnavailable(NOT_CONFIGURED)
        # A connection the pool kept across a restart of PostgreSQL fails
        # once, and is replaced: the second try gets a fresh one.
        for attempt in (1, 2):
            try:
                async with self._pool.acquire(timeout=self._connect_timeout_s) as connection:
                    rows: list[asyncpg.Record] = await connection.fetch(sql, *args)
                    return rows
            except asyncpg.ConnectionDoesNotExistError:
                if attempt == 2:
                    raise self._unavailable("the connection was lost") from None
            except _UNAVAILABLE as exc:
                raise self._unavailable(f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    def _unavailable(self, why: str) -> HistoryUnavailable:
        return HistoryUnavailable(
            f"history database {shown(self.url)} is unavailable: {redact(why)}"
        )
