"""The core adapter: the ws-server's list ``ocpp:requests`` into the stream
``ocpp:inbound``, losing and doubling nothing.

Each move is one Lua script (``adapters/lua/move.lua``): RPOP a batch and
XADD it, atomically, so a SIGKILL at any instant leaves every envelope either
in the list or in the stream, never both, never neither. Several adapters can
run at once; each script takes the oldest envelopes, so order is kept.

When the list is empty the adapter blocks in ``BLMOVE requests requests RIGHT
RIGHT``: a move of the last element onto itself, which changes nothing but
returns as soon as an envelope arrives. No polling, and no in-flight list to
recover after a crash, since the blocking command never takes anything.

When tracing is on, each envelope gets its trace context in the same step:
the adapter draws a span id for each envelope it may move and decides which
new traces are sampled (drawing ids only for those), the script stores the
context of each sampled one next to its envelope, or continues the
envelope's own ``traceparent``, and the adapter records the spans once the
script has returned. An envelope whose new trace is not sampled gets no
trace field: the processor, following its parent's decision, records
nothing for it. Tracing off, the script is as before: no extra argument.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis

from processor import keys, trace_context
from processor.lifecycle import Stopper
from processor.redis_io import TRANSIENT, Backoff, script
from processor.span_record import Attributes, SpanRecord
from processor.spans import ADAPTER_SCOPE, recorder, shaped

log = logging.getLogger(__name__)
_SEND = "send"
# Contexts drawn per move: twice the last move, at least this, so an idle
# adapter does not draw a full batch for every envelope.
_MIN_CONTEXTS = 16
_LOW_64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Contexts:
    """What a traced move offers its envelopes (``adapters/lua/move.lua``):
    a span id each, and trace ids for those whose new trace is sampled."""

    span_ids: str  # 16 hex digits an envelope
    sampled: list[tuple[int, str]]  # (index, trace id in hex), ascending

    @property
    def roots(self) -> str:
        """``sampled`` as the script reads it: a 4-hex-digit 1-based index
        and the trace id, per sampled envelope."""
        return "".join(f"{i + 1:04x}{trace_id}" for i, trace_id in self.sampled)


class MoveTelemetry:
    """The adapter's spans (one ``send`` span per envelope, under the ids
    stored with it, recorded once the move is done) and its counters."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
        source: str,
        stream: str,
    ) -> None:
        provider = tracer_provider or trace.get_tracer_provider()
        self._tracer = provider.get_tracer(ADAPTER_SCOPE)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(ADAPTER_SCOPE)
        self.tracing = trace_context.tracing(self._tracer)
        self._recorder = recorder(provider) if self.tracing else None
        self._name = f"{_SEND} {stream}"
        self._attrs: Attributes = {
            "messaging.system": "redis",
            "messaging.destination.name": stream,
            "messaging.operation.type": _SEND,
            "messaging.operation.name": _SEND,
            "ocpp.source": source,
        }
        # Where spans go encoded, every attribute of ours constant: the
        # shape encodes them once.
        self._encoded = shaped(self._recorder, self._name, SpanKind.PRODUCER.value, self._attrs)
        self.metering = trace_context.metering(meter)
        self._stream = stream
        self._totals = _totals_of(meter)

    def contexts(self, count: int) -> Contexts:
        """Contexts for up to ``count`` envelopes, their new traces sampled
        as the sampler says."""
        return Contexts(os.urandom(8 * count).hex(), self._sample(count))

    def _sample(self, count: int) -> list[tuple[int, str]]:
        """Which of ``count`` new traces the sampler keeps, with their ids.
        With a threshold (:attr:`_bound`), the kept ones are found by the
        gaps between them, each drawn from its geometric law, and given a
        trace id the threshold keeps: the same law as drawing every id and
        asking, at the cost of the kept ones only."""
        bound = self._bound
        if bound is None:
            out = []
            for i in range(count):
                trace_id = random.getrandbits(128) or 1
                if self._keeps(trace_id):
                    out.append((i, f"{trace_id:032x}"))
            return out
        if bound <= 0:
            return []
        p = bound / (1 << 64)  # 1.0 for bounds within 2^-53 of keeping all: then all
        kept = range(count) if p >= 1.0 else _bernoulli(count, p)
        # The low half uniform below the bound: 64 random bits modulo it,
        # redrawn at or above the last multiple of it that fits (uniform
        # there; a redraw is rarer than a kept trace). randrange() cost
        # three times as much.
        span = min(bound, 1 << 64)
        limit = (1 << 64) - (1 << 64) % span
        out = []
        for i in kept:
            while True:
                x = random.getrandbits(128)
                low = x & _LOW_64
                if low < limit and (trace_id := x - low + low % span):
                    break
            out.append((i, f"{trace_id:032x}"))
        return out

    def _keeps(self, trace_id: int) -> bool:
        return trace_context.sampled(
            self._tracer, trace_context.ROOT, trace_id, self._name, SpanKind.PRODUCER
        )

    @functools.cached_property
    def _bound(self) -> int | None:
        """The bound under which the low 64 bits of a root's trace id make
        the sampler keep it, if its decisions are exactly that (the SDK's
        ratio samplers, always_on, always_off): found by bisection and
        checked against it on random ids. None for any other sampler."""
        high = random.getrandbits(64) << 64
        lo, hi = 0, 1 << 64  # the first low part dropped is in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            if self._keeps(high | mid):
                lo = mid + 1
            else:
                hi = mid
        for _ in range(256):
            trace_id = random.getrandbits(128) or 1
            if self._keeps(trace_id) != ((trace_id & _LOW_64) < lo):
                return None
        return lo

    def moved(self, contexts: Contexts, result: Any, started_ns: int, ended_ns: int) -> int:
        """Record the spans of a traced move's sampled envelopes; returns
        how many moved."""
        if not result:
            return 0
        count = int(result[0])
        roots = {i: trace_id for i, trace_id in contexts.sampled if i < count}
        # The envelopes that carried a traceparent: index -> theirs.
        theirs = {int(result[i]) - 1: result[i + 1].decode() for i in range(1, len(result), 2)}
        order = sorted(roots.keys() | theirs.keys()) if theirs else roots
        ids = []  # (trace id, span id, parent id) of each span
        for i in order:
            span_id = contexts.span_ids[16 * i : 16 * i + 16]
            if i in theirs:  # theirs wins: the trace is continued
                parent = trace_context.span_context(theirs[i])
                if parent is not None and parent.trace_flags.sampled:
                    ids.append((f"{parent.trace_id:032x}", span_id, f"{parent.span_id:016x}"))
            else:
                ids.append((roots[i], span_id, ""))
        if not ids:
            return count
        if self._encoded is not None:
            shipper, shape = self._encoded
            shipper.encoded(
                ADAPTER_SCOPE, [shape.span(t, s, p, started_ns, ended_ns) for t, s, p in ids]
            )
        elif self._recorder is not None:
            self._recorder.record([SpanRecord(
                ADAPTER_SCOPE, self._name, SpanKind.PRODUCER.value, t, s, p, started_ns,
                ended_ns, self._attrs,
            ) for t, s, p in ids])  # fmt: skip
        return count

    def count(self, moved: int, trimmed: int = 0) -> None:
        totals = self._totals
        if moved:
            totals.moved[self._stream] = totals.moved.get(self._stream, 0) + moved
        if trimmed:
            totals.trimmed[self._stream] = totals.trimmed.get(self._stream, 0) + trimmed


class _MoveTotals:
    """One meter's envelopes moved and entries trimmed, by stream, observed
    when the SDK collects: an SDK call per move would run cold. Observable
    instruments are one per name and meter (the SDK keeps the first
    callback), so every adapter on a meter adds to the same totals."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.moved: dict[str, int] = {}
        self.trimmed: dict[str, int] = {}
        meter.create_observable_counter(
            "ocpp.adapter.moved", [lambda _: self._observe(self.moved)],
            "{message}", "envelopes moved from the list to the stream",
        )  # fmt: skip
        meter.create_observable_counter(
            "ocpp.adapter.trimmed", [lambda _: self._observe(self.trimmed)],
            "{message}", "acknowledged entries trimmed from the stream",
        )  # fmt: skip

    @staticmethod
    def _observe(totals: dict[str, int]) -> list[metrics.Observation]:
        return [metrics.Observation(n, {"messaging.destination.name": stream})
                for stream, n in list(totals.items())]  # fmt: skip


_move_totals: weakref.WeakKeyDictionary[metrics.Meter, _MoveTotals] = weakref.WeakKeyDictionary()


def _totals_of(meter: metrics.Meter) -> _MoveTotals:
    found = _move_totals.get(meter)
    if found is None:
        found = _move_totals[meter] = _MoveTotals(meter)
    return found


def _bernoulli(count: int, p: float) -> Iterator[int]:
    """The indices in ``range(count)`` kept by independent trials of
    probability ``0 < p < 1``: the gap before each kept one is geometric,
    ``floor(log(U) / log(1 - p))`` for a uniform U in (0, 1]."""
    log_q = math.log1p(-p)
    i = -1
    while True:
        i += 1 + int(math.log(1.0 - random.random()) / log_q)
        if i >= count:
            return
        yield i


class ListToStream:
    """Moves envelopes until :meth:`stop`; trims acknowledged entries."""

    def __init__(
        self,
        redis: Redis,
        *,
        batch: int = 512,
        trim_interval_ms: int = 1000,
        source: str = keys.REQUESTS,
        stream: str = keys.INBOUND,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        """Spans and metrics go to the providers given (the global ones if
        None, no-ops unless someone set them)."""
        self._redis = redis
        self._batch = batch
        self._trim_interval = trim_interval_ms / 1000
        self._source = source
        self._stream = stream
        self._move_script = script(redis, "adapters", "move")
        self._trim_script = script(redis, "adapters", "trim")
        self._backoff = Backoff(log)
        self._stopper = Stopper()
        self._telemetry = MoveTelemetry(tracer_provider, meter_provider, source, stream)
        self._contexts = _MIN_CONTEXTS
        self.moved = 0
        self.trimmed = 0

    def stop(self) -> None:
        """Finish the move in progress, then return from :meth:`run`."""
        self._stopper.stop()

    async def run(self) -> None:
        next_trim = 0.0
        while not self._stopper.stopping:
            try:
                moved = await self.move_once()
                now = anyio.current_time()
                if now >= next_trim:
                    next_trim = now + self._trim_interval
                    await self.trim_once()
                if moved == 0:
                    await self._wait()
                self._backoff.ok()
            except TRANSIENT as exc:
                await self._backoff.wait(exc)

    async def move_once(self) -> int:
        """Move up to one batch; returns how many envelopes moved."""
        # Shielded so stop() never abandons a script whose result we need
        # to count; the script itself is atomic either way.
        with anyio.CancelScope(shield=True):
            if self._telemetry.tracing:
                moved = await self._traced_move()
            else:
                moved = int(
                    await self._move_script(
                        keys=[self._source, self._stream],
                        args=[self._batch, keys.ENVELOPE_FIELD],
                    )
                )
        self.moved += moved
        self._telemetry.count(moved)
        return moved

    async def _traced_move(self) -> int:
        count = min(self._batch, self._contexts)
        contexts = self._telemetry.contexts(count)
        started = time.time_ns()
        result = await self._move_script(
            keys=[self._source, self._stream],
            args=[count, keys.ENVELOPE_FIELD, trace_context.TRACE_FIELD, contexts.span_ids,
                  contexts.roots],
        )  # fmt: skip
        moved = self._telemetry.moved(contexts, result, started, time.time_ns())
        self._contexts = max(_MIN_CONTEXTS, 2 * moved)
        return moved

    async def trim_once(self) -> int:
        """Drop entries every group has acknowledged; -1 if there is no group."""
        removed = int(await self._trim_script(keys=[self._stream]))
        if removed > 0:
            self.trimmed += removed
            self._telemetry.count(0, removed)
        return removed

    async def _wait(self) -> None:
        """Block until the list has an envelope, or the trim interval passes."""
        with self._stopper.interruptible():
            # redis-py types the timeout as int; Redis takes fractions of a second.
            timeout: Any = self._trim_interval
            await self._redis.blmove(self._source, self._source, timeout, "RIGHT", "RIGHT")
