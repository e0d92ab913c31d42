"""The processor's read loop: when to read, claim, commit and tidy up.

At-least-once delivery from the consumer group plus the commit script's XACK
fence gives effects exactly once: an entry is acknowledged in the same atomic
step that applies its effects and pushes its reply, so a crash before that
step leaves it pending (and another replica claims it), and a crash after it
leaves nothing to redo.

Batches overlap by one: while Redis runs a batch's commit script, the next
batch is read and handled, so the processor and Redis work at once rather
than in turns. Commits still go one at a time, in order: a batch's commit
starts once the previous one has returned. A handler that reads state waits
for the commit in flight first, so it sees everything handled before it;
handlers that read nothing (most of a fleet's traffic) do not wait. If the
commit in flight fails, the next batch's outcomes are dropped and both are
handled again, the failed one first.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from redis.exceptions import ResponseError

from processor.consumer_telemetry import GROUP_STATS_INTERVAL_S, Prepared, ProcessorTelemetry
from processor.dispatch import Delivery, Dispatcher, Outcome
from processor.lifecycle import Stopper
from processor.logs import trace_fields
from processor.redis_io import TRANSIENT, Backoff, describe, group_lost
from processor.settings import ProcessorSettings
from processor.stream import GroupStream

log = logging.getLogger(__name__)

# How long a batch is retried through a Redis outage once we are shutting
# down; its entries stay pending for another replica after that.
_GIVE_UP_WHEN_STOPPING_S = 5.0
_DRAIN_ERRORS: tuple[type[Exception], ...] = (ResponseError, *TRANSIENT)
# Loop steps a command takes to reach the socket: redis-py writes under
# asyncio.wait_for when a socket timeout is set (its default, 5 s), and
# wait_for runs the write as a task of its own, one step later. With one
# step, telemetry ran before the commit had left, adding its time to the
# loop's instead of overlapping Redis's (tests/integration/test_consumer.py
# checks the commit is on the wire first).
_STEPS_TO_SEND = 2


class Consumer:
    """Reads batches from the group, hands them to the dispatcher and commits
    the outcomes; claims what dead replicas left behind.

    Spans and metrics go to ``tracer_provider`` and ``meter_provider`` (the
    global ones if None, no-ops unless someone set them)."""

    def __init__(
        self,
        stream: GroupStream,
        dispatcher: Dispatcher,
        settings: ProcessorSettings,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._stream = stream
        self._dispatcher = dispatcher
        self._settings = settings
        self._backoff = Backoff(log)
        self._stopper = Stopper()
        self._telemetry = ProcessorTelemetry(
            tracer_provider, meter_provider,
            stream=stream.stream, group=stream.group,
        )  # fmt: skip
        self.handled = 0
        # The commit in flight and its batch, committed in order (module doc).
        self._in_flight: asyncio.Task[tuple[list[Any], Prepared | None]] | None = None
        self._in_flight_batch: list[Delivery] = []
        self._in_flight_outcomes: list[Outcome] = []
        # When to stop retrying through a Redis outage once stopping.
        self._give_up_at = math.inf

    def stop(self) -> None:
        """Stop reading; what is in flight is finished and committed."""
        self._stopper.stop()

    async def run(self) -> None:
        """Until :meth:`stop`: claim, read, handle and commit; then drain."""
        try:
            await self._run()
        finally:
            self._telemetry.flush()  # the spans it holds back, however it ends

    async def _run(self) -> None:
        s = self._settings
        next_claim = next_stats = 0.0
        next_gc = anyio.current_time() + min(60.0, s.consumer_gc_idle_ms / 10_000)
        await self._retrying(self._stream.ensure_group)
        while not self._stopper.stopping:
            try:
                now = anyio.current_time()
                if now >= next_stats and self._telemetry.metering:
                    next_stats = now + GROUP_STATS_INTERVAL_S
                    t = self._telemetry
                    t.lag, t.pending = await self._stream.group_stats()
                batch: list[Delivery] = []
                if now >= next_claim:
                    # Our own batch in flight would be claimable, idle
                    # while its commit runs: settled first.
                    await self._settle_retrying()
                    batch = await self._claim()
                    # Keep claiming without waiting while a backlog is left.
                    if self._stream.claim_wrapped or not batch:
                        next_claim = now + s.claim_interval_ms / 1000
                if not batch:
                    if self._in_flight is not None and self._in_flight.done():
                        await self._settle_retrying()
                    batch = await self._read_new()
                if batch:
                    await self._handle(batch)
                else:
                    await self._settle_retrying()
                if now >= next_gc:
                    next_gc = now + min(60.0, s.consumer_gc_idle_ms / 10_000)
                    for name in await self._stream.remove_idle_consumers(s.consumer_gc_idle_ms):
                        log.info("removed idle consumer %s", name.decode(errors="replace"))
                self._backoff.ok()
            except ResponseError as exc:
                if not group_lost(exc):
                    raise
                log.warning("consumer group missing (Redis restarted empty?); recreating it")
                await self._retrying(self._stream.ensure_group)
            except TRANSIENT as exc:
                await self._backoff.wait(exc)
        await self._settle_retrying()
        await self._drain()

    async def _read_new(self) -> list[Delivery]:
        with self._stopper.interruptible():
            return await self._stream.read(self._settings.batch_size, self._settings.read_block_ms)
        # Cancelled by stop(): whatever the read had taken is in our pending
        # list and is handled by _drain.
        return []

    async def _claim(self) -> list[Delivery]:
        s = self._settings
        batch, vanished = await self._stream.claim(s.claim_min_idle_ms, s.batch_size)
        if vanished:
            log.error("pending entries vanished from the stream: %s", vanished)
        if batch:
            log.info("claimed %d entries idle for over %d ms", len(batch), s.claim_min_idle_ms)
            self._telemetry.claimed(len(batch))
        return batch

    async def _handle(self, batch: list[Delivery]) -> None:
        """Handle ``batch`` and start its commit once the commit in flight
        has returned; through Redis outages: handling again after a failed
        commit is safe, since the commit is fenced by XACK."""
        # Shielded: a stop() arriving mid-batch must not abandon handled work.
        with anyio.CancelScope(shield=True):
            started_ns = time.time_ns()
            while True:
                try:
                    outcomes = await self._dispatcher.handle_batch(
                        batch, datetime.now(UTC), self._settle
                    )
                    await self._settle()
                    break
                except TRANSIENT as exc:
                    # The commit in flight, or a read of ours, failed: the
                    # batch in flight is committed again (handled again
                    # first), then this one is handled again.
                    if not await self._recover(exc):
                        return
            self._in_flight_batch, self._in_flight_outcomes = batch, outcomes
            self._in_flight = asyncio.ensure_future(self._commit(batch, outcomes, started_ns))

    async def _settle(self) -> None:
        """Wait for the commit in flight; raises what it raised, keeping it
        to be committed again."""
        commit = self._in_flight
        if commit is None:
            return
        results, prepared = await asyncio.shield(commit)
        self._in_flight = None
        self._finished(self._in_flight_outcomes, results, prepared)

    async def _settle_retrying(self) -> None:
        """Settle the commit in flight through Redis outages (on stopping)."""
        with anyio.CancelScope(shield=True):
            while self._in_flight is not None:
                try:
                    await self._settle()
                except TRANSIENT as exc:
                    if not await self._recover(exc):
                        return

    async def _recover(self, exc: Exception) -> bool:
        """After a failed commit or read: wait, then handle and commit the
        batch in flight again, at once. False if Redis stayed down past the
        time allowed once stopping: its entries stay pending."""
        while True:
            if self._stopper.stopping:
                # Once, for the whole outage: each retry of the batch in hand
                # comes back here, and must not start the count again.
                self._give_up_at = min(
                    self._give_up_at, anyio.current_time() + _GIVE_UP_WHEN_STOPPING_S
                )
                if anyio.current_time() >= self._give_up_at:
                    log.error("redis still down while stopping; what this replica holds "
                              "stays pending for another")  # fmt: skip
                    self._in_flight = None
                    return False
            await self._backoff.wait(exc)
            if self._in_flight is None or not self._in_flight.done():
                return True
            if self._in_flight.exception() is None:
                return True  # it went through after all: settled by the caller
            batch = self._in_flight_batch
            try:
                outcomes = await self._dispatcher.handle_batch(batch, datetime.now(UTC))
                results, prepared = await self._commit(batch, outcomes, time.time_ns())
            except TRANSIENT as again:
                exc = again
                continue
            self._in_flight = None
            self._backoff.ok()
            self._finished(outcomes, results, prepared)
            return True

    def _finished(
        self, outcomes: list[Outcome], results: list[Any], prepared: Prepared | None
    ) -> None:
        if prepared is not None:
            self._telemetry.done(prepared, results, time.time_ns())
        for outcome, result in zip(outcomes, results, strict=True):
            if isinstance(result, bytes):
                log.error(
                    "effects failed for entry %s: %s",
                    outcome.entry_id.decode(),
                    result.decode(errors="replace"),
                    extra=trace_fields(_traceparent(self._in_flight_batch, outcome.entry_id)),
                )
        self.handled += len(outcomes)

    async def _commit(
        self, batch: list[Delivery], outcomes: list[Outcome], started_ns: int
    ) -> tuple[list[Any], Prepared | None]:
        """Commit ``outcomes``. With telemetry on, its work for the batch is
        done while the commit script runs: the loop waits on Redis then, so
        the work costs it no time."""
        t = self._telemetry
        if not t.enabled:
            return (await self._stream.commit(outcomes) if outcomes else []), None
        if not outcomes:
            return [], t.prepare(batch, outcomes, started_ns)
        # A bare asyncio task (the services run on asyncio): an anyio task
        # group per batch cost ~30 µs more, as much as the overlap saved.
        commit = asyncio.ensure_future(self._stream.commit(outcomes))
        try:
            for _ in range(_STEPS_TO_SEND):  # the commit runs up to its wait for Redis
                await anyio.lowlevel.checkpoint()
            prepared = t.prepare(batch, outcomes, started_ns)
        finally:
            results = await commit  # whatever prepare did: the batch's effects come first
        return results, prepared

    async def _drain(self) -> None:
        """Handle what was delivered to us but not yet committed, once each."""
        after: bytes | str = "0-0"
        for _ in range(math.ceil(10_000 / self._settings.batch_size)):
            try:
                batch = await self._stream.read(self._settings.batch_size, None, start=after)
            except _DRAIN_ERRORS as exc:
                log.warning(
                    "could not drain pending entries, left for other replicas: %s", describe(exc)
                )
                return
            if not batch:
                return
            after = batch[-1].entry_id
            await self._handle(batch)
            await self._settle_retrying()

    async def _retrying(self, op: Callable[[], Awaitable[object]]) -> None:
        while not self._stopper.stopping:
            try:
                await op()
                self._backoff.ok()
                return
            except TRANSIENT as exc:
                await self._backoff.wait(exc)


def _traceparent(batch: list[Delivery], entry_id: bytes) -> bytes:
    return next((d.traceparent for d in batch if d.entry_id == entry_id), b"")
