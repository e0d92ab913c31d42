"""``ocpp-archiver run``: the history stream into PostgreSQL, exactly once.

A consumer of its own group (``archivers``) on ``ocpp:history``, any number
of replicas. Each batch of entries is written in one database transaction
and acknowledged only after it committed:

* killed before the commit, nothing of the batch is in the database and its
  entries are still pending: this consumer reads them again at start, or
  another replica claims them once idle;
* killed between the commit and the XACK, the batch is written again, and
  every row's key (``rows.py``) makes the second write change nothing.

PostgreSQL down, the batch in hand is retried with backoff and nothing
else is read: history waits in the stream (the processors go on answering
chargers) and drains when the database is back. What the database refuses
for its content (a value out of a column's range, a key too long for an
index) is found by writing the batch message by message (a history entry's
field is one inbound message), and that message's records are set aside on
``ocpp:history:dead`` with the reason, so one bad record never stops the
rest. Which errors are which is decided by SQLSTATE (:func:`outage`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import asyncpg
import msgspec
from asyncpg.exceptions._base import DataError as ClientDataError
from asyncpg.exceptions._base import InternalClientError
from redis.asyncio import Redis
from redis.exceptions import OutOfMemoryError, ResponseError

from adapters.archiver import rows as rows_
from adapters.archiver.connector import Database
from adapters.archiver.writer import write
from processor import keys
from processor.lifecycle import Stopper
from processor.logs import redact
from processor.redis_io import (
    TRANSIENT,
    Backoff,
    describe,
    ensure_group,
    group_backlog,
    group_exists,
    group_lost,
    script,
)

log = logging.getLogger("archiver")

# Entries the database refused, with the reason: for an operator to look at.
HISTORY_DEAD = "ocpp:history:dead"
_HISTORY_DEAD_MAXLEN = 100_000

# Errors that pass: the connection (08), the server's resources (53) or
# state (55, 57P, 58), a transaction to retry (40), credentials (28), the
# database or schema not there yet (3D, 42P01 table, 42703 column, 42883
# function: a migration to come), rights (42501), a read-only standby
# (25006), an internal error (XX). Waited out: setting history aside for
# them would lose it for a fault that passes. Any other error of a write is
# the data's: it is found message by message and set aside.
_OUTAGE_CLASSES = ("08", "53", "55", "57", "58", "40", "28", "3D", "XX")
_OUTAGE_STATES = frozenset({"42P01", "42703", "42883", "42501", "25006"})


def outage(exc: BaseException) -> bool:
    """Whether ``exc``, raised by a write, is a fault that passes (wait and
    retry) rather than the database refusing what was written."""
    if isinstance(exc, ClientDataError):
        return False  # a value the driver cannot encode (an int past int4)
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        return state.startswith(_OUTAGE_CLASSES) or state in _OUTAGE_STATES
    # asyncpg has several for a lost connection: OSError, InterfaceError,
    # InternalClientError ("another operation in progress" after one).
    return isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError, InternalClientError))


# Redis faults to wait out; out of memory among them (see run).
_REDIS_WAIT: tuple[type[Exception], ...] = (*TRANSIENT, OutOfMemoryError)


class _Abandoned(Exception):
    """Stopping while the database is down: the batch stays pending."""


# (history entry id, field): one inbound message's records, or one script's.
Part = tuple[str, str]
Entry = tuple[str, dict[str, bytes]]


def _entries(reply: Any) -> list[Entry]:
    out = []
    for entry_id, fields in reply:
        out.append(
            (entry_id.decode(), {k.decode(): v for k, v in (fields or {}).items()}),
        )
    return out


class Archiver:
    """One consumer of the ``archivers`` group."""

    def __init__(
        self,
        redis: Redis,
        database: Database,
        consumer: str,
        *,
        batch: int = 64,
        block_ms: int = 1000,
        claim_idle_ms: int = 60_000,
        trim_interval_ms: int = 1000,
        stream: str = keys.HISTORY,
        group: str = keys.ARCHIVERS,
    ) -> None:
        self._redis = redis
        self._database = database
        self.consumer = consumer
        self._batch = batch
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._trim_interval = trim_interval_ms / 1000
        self._stream = stream
        self._group = group
        self._trim = script(redis, "adapters", "trim")
        self._stopper = Stopper()
        self._redis_backoff = Backoff(log)
        # Our own pending entries first (a crash left them), then new ones.
        self._cursor = "0"
        self._next_claim = 0.0
        self._next_trim = 0.0
        self.database_down_since: float | None = None
        self.database_error = ""
        self.archived = 0
        self.rows = 0
        self.set_aside = 0
        # History not yet written, as last read (lag + pending entries).
        self.last_backlog = 0

    def stop(self) -> None:
        """Finish the batch in hand, then return from :meth:`run`."""
        self._stopper.stop()

    async def run(self) -> None:
        await self._ensure_group()
        while not self._stopper.stopping:
            try:
                entries = await self._take()
                if entries:
                    # Shielded: a batch is written and acknowledged whole,
                    # or left pending whole, never abandoned half way.
                    with anyio.CancelScope(shield=True):
                        await self.archive(entries)
                await self._maybe_trim()
                self._redis_backoff.ok()
            except _REDIS_WAIT as exc:
                # Out of memory, Redis still takes the XACKs and the trim
                # (its script may run then) that free it: retry until then.
                await self._redis_backoff.wait(exc)
            except ResponseError as exc:
                if not group_lost(exc):
                    raise
                log.warning("group %s lost on %s: creating it again", self._group, self._stream)
                await self._ensure_group()

    async def _ensure_group(self) -> None:
        while not self._stopper.stopping:
            try:
                # Looked for first: creating it is refused when Redis is
                # out of memory, the very time an archiver must start.
                if not await group_exists(self._redis, self._stream, self._group):
                    await ensure_group(self._redis, self._stream, self._group)
                return
            except _REDIS_WAIT as exc:
                await self._redis_backoff.wait(exc)

    async def _take(self) -> list[Entry]:
        now = anyio.current_time()
        if now >= self._next_claim:
            self._next_claim = now + self._claim_idle_ms / 2000
            claimed = await self._claim()
            if claimed:
                return claimed
        if self._cursor != ">":
            reply: Any = await self._redis.xreadgroup(
                self._group, self.consumer, {self._stream: self._cursor}, count=self._batch
            )
            entries = _entries(reply[0][1]) if reply else []
            if entries:
                self._cursor = entries[-1][0]
                return entries
            self._cursor = ">"
        with self._stopper.interruptible():
            reply = await self._redis.xreadgroup(
                self._group,
                self.consumer,
                {self._stream: ">"},
                count=self._batch,
                block=self._block_ms,
            )
            return _entries(reply[0][1]) if reply else []
        return []

    async def _claim(self) -> list[Entry]:
        """Entries another replica took and left idle (it died)."""
        reply: Any = await self._redis.xautoclaim(
            self._stream, self._group, self.consumer, self._claim_idle_ms, "0-0", count=self._batch
        )
        claimed = [(i, f) for i, f in reply[1] if f is not None]
        if claimed:
            log.info("claimed %d history entries left idle by another archiver", len(claimed))
        return _entries(claimed)

    async def archive(self, entries: Sequence[Entry]) -> None:
        """Write ``entries`` and acknowledge them; waits out a database outage."""
        rows, bad = _gather(entries)
        try:
            if await self._refusal(rows) is not None:
                # The database refused something of the batch: find what,
                # message by message, and set it aside.
                await self._one_by_one(entries, bad)
        except _Abandoned:
            log.warning("stopping with postgresql down: %d history entries left pending",
                        len(entries))  # fmt: skip
            return
        self._database_up()
        if bad:
            await self._set_aside(entries, bad)
        await self._redis.xack(self._stream, self._group, *[i for i, _ in entries])
        self.archived += len(entries)
        self.rows += len(rows)

    async def _refusal(self, rows: rows_.Rows) -> Exception | None:
        """Write ``rows`` in one transaction, waiting out outages (raises
        _Abandoned if stopped meanwhile); None once written, or what the
        database refused them with."""
        while len(rows):
            try:
                async with self._database.transaction() as session:
                    await write(session, rows)
                return None
            except Exception as exc:
                if not outage(exc):
                    return exc
                await self._database_down(exc)
        return None

    async def _one_by_one(self, entries: Sequence[Entry], bad: dict[Part, str]) -> None:
        for entry_id, fields in entries:
            for index, (name, blob) in enumerate(fields.items()):
                if (entry_id, name) in bad:
                    continue
                single = rows_.Rows()
                rows_.add_field(single, entry_id, index, name, blob)
                exc = await self._refusal(single)
                if exc is None:
                    continue
                if not isinstance(exc, asyncpg.PostgresError | ClientDataError):
                    log.error("writing history entry %s field %s", entry_id, name,
                              exc_info=exc)  # fmt: skip
                bad[(entry_id, name)] = f"refused by PostgreSQL: {describe(exc)}"

    async def _set_aside(self, entries: Sequence[Entry], bad: Mapping[Part, str]) -> None:
        """Copy each message in ``bad`` to ``ocpp:history:dead`` with its
        reason, before the XACK that lets the stream be trimmed of it."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for entry_id, fields in entries:
                for name, blob in fields.items():
                    reason = bad.get((entry_id, name))
                    if reason is None:
                        continue
                    log.error("history entry %s field %s set aside on %s: %s", entry_id, name,
                              HISTORY_DEAD, reason)  # fmt: skip
                    pipe.xadd(HISTORY_DEAD, {"reason": reason, "entry_id": entry_id,
                                             "field": name, name: blob},
                              maxlen=_HISTORY_DEAD_MAXLEN, approximate=True)  # fmt: skip
            await pipe.execute()
        self.set_aside += len(bad)

    async def _database_down(self, exc: BaseException) -> None:
        if self._stopper.stopping:
            raise _Abandoned  # SIGTERM: leave it pending, for us or a replica
        reason = redact(describe(exc))
        if self.database_down_since is None:
            self.database_down_since = time.monotonic()
            log.warning(
                "postgresql unavailable, history waits in %s until it is back: %s",
                self._stream,
                reason,
            )
        self.database_error = reason
        down_for = time.monotonic() - self.database_down_since
        await anyio.sleep(min(2.0, 0.05 * 2 ** min(down_for, 6)))

    def _database_up(self) -> None:
        if self.database_down_since is not None:
            down = time.monotonic() - self.database_down_since
            log.warning("postgresql reachable again after %.1f s: draining the backlog", down)
            self.database_down_since = None
            self.database_error = ""

    async def _maybe_trim(self) -> None:
        now = anyio.current_time()
        if now >= self._next_trim:
            self._next_trim = now + self._trim_interval
            await self._trim(keys=[self._stream])

    async def backlog(self) -> tuple[int | None, int | None]:
        """History not yet archived: the group's lag (entries not read yet;
        None if Redis cannot tell) and pending (read, not acknowledged)."""
        return await group_backlog(self._redis, self._stream, self._group)


def _gather(entries: Sequence[Entry]) -> tuple[rows_.Rows, dict[Part, str]]:
    """Rows of the messages that are history; the others, with why not."""
    rows = rows_.Rows()
    bad: dict[Part, str] = {}
    for entry_id, fields in entries:
        for index, (name, blob) in enumerate(fields.items()):
            try:
                rows_.add_field(rows, entry_id, index, name, blob)
            except (msgspec.DecodeError, ValueError, KeyError) as exc:
                bad[(entry_id, name)] = f"not history: {exc}"
    return rows, bad
