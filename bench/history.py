"""History in the benches: the PostgreSQL behind ``ocpp-archiver``, the
archivers' backlog on ``ocpp:history``, and the check that PostgreSQL holds
exactly what the client sent.

The backlog is what the ``archivers`` group has not acknowledged yet: its
``lag`` (entries not yet read) plus its ``pending`` (read, not yet
written and acknowledged), from XINFO GROUPS. It counts stream entries, and
the processor appends one entry per commit batch (``processor/history.py``),
so an entry holds the records of up to a batch of messages.

"History committed" is the moment that backlog reads 0: every record the
system appended so far is in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import redis

from adapters.devstack import PostgresServer, wipe_schema
from bench.fieldmix import Phase
from bench.fieldmix201 import ENDED, STARTED
from bench.procstat import family_cpu_seconds
from bench.traffic import BenchFailure
from processor import keys
from processor.redis_io import group_info
from processor.v201 import messages as v201

HISTORY_DEAD = "ocpp:history:dead"


@dataclass(frozen=True)
class Database:
    """Where the archiver writes; ``pid`` is the postmaster's when the
    server is ours (its CPU is then measured), else None."""

    url: str
    pid: int | None

    def cpu_seconds(self) -> float | None:
        return family_cpu_seconds(self.pid) if self.pid is not None else None


def start_database(stack: ExitStack) -> Database:
    """``DATABASE_URL`` with its ``public`` schema wiped, else a private
    PostgreSQL (fsync on, as in production) stopped with ``stack``."""
    external = os.environ.get("DATABASE_URL")
    if external:
        asyncio.run(wipe_schema(external))
        return Database(external, None)
    server = stack.enter_context(PostgresServer())
    assert server.process is not None
    return Database(server.url, server.process.pid)


def backlog(client: redis.Redis) -> int:
    """History entries the archivers have not acknowledged: lag + pending."""
    groups: Any = client.xinfo_groups(keys.HISTORY)
    group = group_info(groups, keys.ARCHIVERS)
    if group is not None:
        lag = group.get("lag")
        if lag is None:
            # Redis cannot tell (entries deleted inside the range): count them.
            last = group["last-delivered-id"]
            last = last.decode() if isinstance(last, bytes) else last
            lag = len(client.xrange(keys.HISTORY, f"({last}", "+"))
        return int(lag) + int(group["pending"])
    raise BenchFailure(f"no group {keys.ARCHIVERS!r} on {keys.HISTORY}")


class BacklogSampler(threading.Thread):
    """Reads the backlog every ``interval`` s from a connection of its own,
    until :meth:`finish`, which returns the largest value seen."""

    def __init__(self, url: str, interval: float = 0.05) -> None:
        super().__init__(name="bench-backlog", daemon=True)
        self._client = redis.Redis.from_url(url)
        self._interval = interval
        self._done = threading.Event()
        self.largest = 0
        self.samples = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._done.is_set():
                self.largest = max(self.largest, backlog(self._client))
                self.samples += 1
                self._done.wait(self._interval)
        except BaseException as exc:  # reported by finish()
            self.error = exc
        finally:
            self._client.close()

    def finish(self) -> int:
        self._done.set()
        self.join(10)
        if self.error is not None:
            raise BenchFailure(f"backlog sampler failed: {self.error!r}")
        return self.largest


def wait_committed(
    client: redis.Redis, timeout: float, check: Callable[[], None], interval: float = 0.005
) -> float:
    """Poll until the backlog is 0 and return that moment (perf_counter);
    ``check`` runs between polls and should raise if a service died."""
    deadline = time.perf_counter() + timeout
    while True:
        if backlog(client) == 0:
            return time.perf_counter()
        check()
        if time.perf_counter() > deadline:
            raise BenchFailure(
                f"history not committed {timeout:g} s on: backlog {backlog(client)} entries"
            )
        time.sleep(interval)


@dataclass
class Sent:
    """What the client sent over a run: messages by label (action, or a
    2.0.1 TransactionEvent's kind), the meterValues and sampled values they
    carried, sessions opened (each 1.6 opening StartTransaction; a phase's
    own StartTransactions are retries of those and open nothing) and the
    2.0.1 sessions any event named."""

    actions: Counter[str] = field(default_factory=Counter)
    opened: int = 0
    readings: int = 0
    samples: int = 0
    readings_v201: int = 0  # of them, in a 2.0.1 session's events
    sessions_v201: set[tuple[str, str]] = field(default_factory=set)
    # 2.0.1 events that say something of their session (not a periodic Updated).
    telling_v201: int = 0

    def record(self, phase: Phase) -> None:
        """Count a phase that was sent and answered."""
        self.actions.update(phase.actions)
        for p in phase.messages:
            readings = getattr(p.payload, "meter_value", None) or []
            self.readings += len(readings)
            self.samples += sum(len(r.sampled_value) for r in readings)
            if isinstance(p.payload, v201.TransactionEvent):
                cp = phase.charge_points[p.charger]
                self.sessions_v201.add((cp, p.payload.transaction_info.transaction_id))
                self.readings_v201 += len(readings)
                self.telling_v201 += _tells(p.payload)

    def expected(self) -> dict[str, int]:
        """The rows PostgreSQL must hold for this traffic, by query name."""
        a = self.actions
        return {
            # A row per meterValue, its samples in it.
            "meter_values": self.readings,
            "sampled values": self.samples,
            "transactions": self.opened,
            "transactions stopped": a["StopTransaction"],
            # A 2.0.1 session's meterValues name it; one row per event that
            # says something of its session (a periodic Updated does not).
            "meter_values with transaction_ref": self.readings_v201,
            "transaction_events": self.telling_v201,
            "transactions_v201": len(self.sessions_v201),
            "transactions_v201 started, with meter_start": a[STARTED],
            "transactions_v201 stopped, with meter_stop": a[ENDED],
            "charger_events": a["StatusNotification"] + a["BootNotification"],
            "anomalies": 0,
            "dead_letters": 0,
        }


def _tells(event: v201.TransactionEvent) -> bool:
    """Whether a 2.0.1 event says something of its session besides meter
    values (processor/v201/handlers/transactions.py keeps only those)."""
    info = event.transaction_info
    return (event.event_type != "Updated" or info.charging_state is not None
            or event.evse is not None or event.id_token is not None
            or info.remote_start_id is not None or event.reservation_id is not None)  # fmt: skip


_COUNTS = {
    "meter_values": "SELECT count(*) FROM meter_values",
    "sampled values": "SELECT coalesce(sum(json_array_length(sampled_values)), 0) "
    "FROM meter_values",
    "transactions": "SELECT count(*) FROM transactions WHERE started_at IS NOT NULL",
    "transactions stopped": "SELECT count(*) FROM transactions WHERE stopped_at IS NOT NULL",
    "meter_values with transaction_ref": "SELECT count(*) FROM meter_values "
    "WHERE transaction_ref IS NOT NULL AND transaction_id IS NULL",
    "transaction_events": "SELECT count(*) FROM transaction_events",
    "transactions_v201": "SELECT count(*) FROM transactions_v201",
    "transactions_v201 started, with meter_start": "SELECT count(*) FROM transactions_v201 "
    "WHERE started_at IS NOT NULL AND meter_start IS NOT NULL",
    "transactions_v201 stopped, with meter_stop": "SELECT count(*) FROM transactions_v201 "
    "WHERE stopped_at IS NOT NULL AND meter_stop IS NOT NULL",
    "charger_events": "SELECT count(*) FROM charger_events",
    "anomalies": "SELECT count(*) FROM anomalies",
    "dead_letters": "SELECT count(*) FROM dead_letters",
}


async def _counts(url: str) -> dict[str, int]:
    connection = await asyncpg.connect(url)
    try:
        return {name: int(await connection.fetchval(sql)) for name, sql in _COUNTS.items()}
    finally:
        await connection.close()


def check_database(url: str, client: redis.Redis, sent: Sent) -> dict[str, int]:
    """The row counts, once history is committed; raises unless each is
    exactly what ``sent`` makes and nothing was set aside or dead-lettered."""
    counts = asyncio.run(_counts(url))
    expected = sent.expected()
    wrong = [f"{name}: {counts[name]:,} rows, expected {n:,}"
             for name, n in expected.items() if counts[name] != n]  # fmt: skip
    for stream in (HISTORY_DEAD, keys.DEAD):
        if n := int(client.xlen(stream)):
            wrong.append(f"{stream}: {n} entries")
    if wrong:
        raise BenchFailure("PostgreSQL does not hold what was sent: " + "; ".join(wrong))
    return counts
