"""What the processor records: per message a ``process`` span continuing the
message's trace, per batch the metrics, summed.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from typing import Any

import msgspec
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind

from processor import clock
from processor.batch_metrics import LATENCY_BUCKETS, for_meter
from processor.dispatch import Delivery, Outcome
from processor.span_record import Attributes, SpanRecord
from processor.spans import FLUSH_AFTER_S, PROCESSOR_SCOPE, command_counter, recorder, shaped
from processor.trace_context import (
    PROCESS_SPAN,
    SAMPLED_FLAGS,
    follows_parent,
    metering,
    new_span_id,
    parent_context,
    random_ids,
    sampled,
    span_context,
    tracing,
)
from processor.v16.messages import REQUESTS

log = logging.getLogger(__name__)

GROUP_STATS_INTERVAL_S = 5.0
_KNOWN_ACTIONS = frozenset(REQUESTS)
UNTRACED_WARNING_AFTER = 10_000  # entries in a row without a trace context
SPANS_PER_FLUSH = 256  # sampled messages held before they become spans (_defer)


def _action(action: str | None) -> str:
    """A bounded metric label: unknown actions (a charger may send anything)
    are ``other``."""
    return action if action in _KNOWN_ACTIONS else "other"


def _outcome(o: Outcome) -> tuple[str, str, int]:
    """(action, outcome, message type) of a handled message."""
    env = o.envelope
    if o.command is not None:
        return o.command.action, _command_outcome(o), env.message_type if env else 3
    if env is None:
        return "", "dead_letter" if o.dead_reason else "error", 0
    if o.dead_reason:
        status = "dead_letter"
    elif env.message_type != 2:
        status = "unknown_command"
    else:
        status = "error" if o.error_code else "result"
    return _action(env.action), status, env.message_type


def _command_outcome(o: Outcome) -> str:
    """answered or failed; late if the command was no longer waiting (it
    timed out, or another reply came first) and the commit will skip it."""
    assert o.command is not None
    return o.command_state if o.command.state == "sent" else "late"


class ProcessorTelemetry:
    """Spans and metrics of one consumer: per message a ``process`` span
    continuing the message's trace (a reply to one of our commands links to
    the span that sent it), and per batch the metrics, summed."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
        *,
        stream: str,
        group: str,
    ) -> None:
        provider = tracer_provider or trace.get_tracer_provider()
        tracer = provider.get_tracer(PROCESSOR_SCOPE)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(PROCESSOR_SCOPE)
        self._tracer = tracer
        self.tracing = tracing(tracer)
        self.metering = metering(meter)
        self._recorder = recorder(provider) if self.tracing else None
        self._follow_flags = follows_parent(tracer)
        self._span_name = f"{PROCESS_SPAN} {stream}"
        base: dict[str, Any] = {
            "messaging.system": "redis",
            "messaging.destination.name": stream,
            "messaging.consumer.group.name": group,
        }
        self._metric_attrs = {**base, "messaging.operation.name": PROCESS_SPAN}
        self._span_attrs: Attributes = {
            **self._metric_attrs,
            "messaging.operation.type": PROCESS_SPAN,
        }
        self._untraced = 0  # entries in a row without a trace context; -1 once said
        self._finishing: list[Prepared] = []  # batches done() left for later
        self._waiting: list[Prepared] = []  # batches whose spans wait (_defer)
        self._waiting_spans = 0
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # where a flush is due
        self._flush_timer: asyncio.TimerHandle | None = None
        # Where spans go encoded: the shape encodes the constant attributes once.
        self._encoded = shaped(
            self._recorder, self._span_name, SpanKind.CONSUMER.value, self._span_attrs
        )
        # (Which replica: the resource's service.instance.id says.)
        self.lag: int | None = None
        self.pending: int | None = None
        self._batch = for_meter(meter)  # ocpp.messages and the per-batch histograms
        self._claims = meter.create_counter(
            "ocpp.claims", "{message}", "entries taken over from other consumers"
        )
        self._dead = meter.create_counter(
            "ocpp.dead_letters", "{message}", "entries moved to the dead-letter stream"
        )
        self._commands = command_counter(meter)
        self._round_trip = meter.create_histogram(
            "ocpp.command.duration", "s", "from sending a command to handling its reply",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )  # fmt: skip
        meter.create_observable_gauge(
            "ocpp.stream.lag", [lambda _: self._observe(self.lag, base)],
            "{message}", "entries in the stream not yet delivered to the group",
        )  # fmt: skip
        meter.create_observable_gauge(
            "ocpp.stream.pending", [lambda _: self._observe(self.pending, base)],
            "{message}", "entries delivered to the group and not yet acknowledged",
        )  # fmt: skip

    @staticmethod
    def _observe(value: int | None, attrs: dict[str, Any]) -> list[metrics.Observation]:
        return [] if value is None else [metrics.Observation(value, attrs)]

    @property
    def enabled(self) -> bool:
        return self.tracing or self.metering

    def claimed(self, count: int) -> None:
        if count and self.metering:
            self._claims.add(count, self._metric_attrs)

    def prepare(
        self, batch: Sequence[Delivery], outcomes: Sequence[Outcome], started_ns: int
    ) -> Prepared:
        """The batch's telemetry, but for what its commit decides: run while
        the commit is in flight (``processor/consumer.py``), so it costs the
        read-handle-commit loop nothing. ``outcomes`` are in batch order,
        those whose handler failed left out. Finishes the batches before it
        first (:meth:`done` left them for now)."""
        if self._finishing:
            self._finish()
        prepared = Prepared(started_ns)
        if self.metering:
            self._tally(outcomes, prepared)
            if len(batch) > len(outcomes):
                prepared.counts["", "handler_failed", 0] = len(batch) - len(outcomes)
        if self._recorder is not None:
            prepared.spans = self._trace(batch, outcomes)
        return prepared

    def done(self, prepared: Prepared, results: Sequence[Any], ended_ns: int) -> None:
        """Finish what :meth:`prepare` began, with the commit's ``results``:
        later, in the next batch's :meth:`prepare` (which runs while that
        batch's commit is in flight) or within ``FLUSH_AFTER_S``, so that it
        too costs the read-handle-commit loop nothing; at once outside a
        running loop."""
        prepared.results, prepared.ended_ns = results, ended_ns
        self._finishing.append(prepared)
        if not self._arm():
            self.flush()

    def _finish(self) -> None:
        finishing, self._finishing = self._finishing, []
        for prepared in finishing:
            try:
                self._done(prepared)
            except Exception:  # a bug here must cost one batch's telemetry, not the consumer
                log.exception("recording a batch's telemetry failed")

    def _done(self, prepared: Prepared) -> None:
        results, ended_ns = prepared.results, prepared.ended_ns
        if self.metering:
            for key, n in prepared.counts.items():
                if key[1] == "dead_letter":
                    self._dead.add(n, {"ocpp.action": key[0]})
            for o in prepared.commands:
                self._command_done(o, ended_ns)
            latencies = []
            for action, timestamp in prepared.oldest.items():
                received = clock.parse(timestamp)
                if received is not None:
                    latency = max(0.0, ended_ns / 1e9 - received.timestamp())
                    latencies.append((_action(action), latency))
            seconds = (ended_ns - prepared.started_ns) / 1e9
            self._batch.add(prepared.counts, seconds, self._metric_attrs, latencies)
        if prepared.spans:
            for span in prepared.spans:
                at = span.at
                result = results[at] if at is not None and at < len(results) else None
                if isinstance(result, bytes) and not span.error:
                    span.error = f"effects failed: {result.decode(errors='replace')}"
            if self._encoded is not None:
                self._defer(prepared)
            else:
                self._end([prepared])

    def _defer(self, prepared: Prepared) -> None:
        """Hold a batch's sampled messages until ``SPANS_PER_FLUSH`` have
        gathered or ``FLUSH_AFTER_S`` has passed: made into spans once a
        batch, their few µs each ran cold and evicted the handlers' own
        working set; made in one go, they run warm."""
        # Only the times and the spans: the rest of it is done with.
        self._waiting.append(Prepared(prepared.started_ns, prepared.ended_ns, spans=prepared.spans))
        self._waiting_spans += len(prepared.spans)
        if self._waiting_spans >= SPANS_PER_FLUSH or not self._arm():
            self._end_waiting()

    def _arm(self) -> bool:
        """Make sure a timer will flush within ``FLUSH_AFTER_S``; False
        outside a running loop, where nothing would."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self._flush_timer is None or self._flush_loop is not loop:
            # (A timer of a loop since closed never fires: one for this loop.)
            self._flush_timer = loop.call_later(FLUSH_AFTER_S, self.flush)
            self._flush_loop = loop
        return True

    def flush(self) -> None:
        """Finish the batches left for later and turn the held messages into
        spans, now (at a consumer's end)."""
        self._finish()  # (before the timer goes: what it holds back would arm another)
        if self._flush_timer is not None:
            self._flush_timer.cancel()  # else it would cut the next gathering short
        self._flush_timer = self._flush_loop = None
        self._end_waiting()

    def _end_waiting(self) -> None:
        waiting, self._waiting, self._waiting_spans = self._waiting, [], 0
        if waiting:
            self._end(waiting)

    def _end(self, batches: Sequence[Prepared]) -> None:
        if self._encoded is not None:
            shipper, shape = self._encoded
            encode, attributes = shape.span, shape.encoder.attributes
            shipper.encoded(PROCESSOR_SCOPE, [
                encode(s.trace_id, s.span_id, s.parent_id, p.started_ns, p.ended_ns,
                       attributes(s.attributes), s.links, s.error)
                for p in batches for s in p.spans
            ])  # fmt: skip
        elif self._recorder is not None:
            base, name, kind = self._span_attrs, self._span_name, SpanKind.CONSUMER.value
            self._recorder.record([
                SpanRecord(PROCESSOR_SCOPE, name, kind, s.trace_id, s.span_id, s.parent_id,
                           p.started_ns, p.ended_ns, {**base, **s.attributes}, list(s.links),
                           s.error)
                for p in batches for s in p.spans
            ])  # fmt: skip

    @staticmethod
    def _tally(outcomes: Sequence[Outcome], prepared: Prepared) -> None:
        """Messages by (action, outcome, type), the first timestamp seen per
        action, and the replies to commands."""
        counts, oldest = prepared.counts, prepared.oldest
        # CALLs answered, the common case, are tallied by action alone: cheap.
        tallies: tuple[dict[str, int], dict[str, int]] = ({}, {})  # results, errors
        for o in outcomes:
            env = o.envelope
            if env is not None and env.message_type == 2 and not o.dead_reason:
                action = env.action or ""
                tally = tallies[bool(o.error_code)]
                n = tally.get(action)
                tally[action] = 1 if n is None else n + 1
                if n is None and action not in oldest and env.timestamp:
                    oldest[action] = env.timestamp
                continue
            key = _outcome(o)
            counts[key] = counts.get(key, 0) + 1
            if key[0] not in oldest and env is not None and env.timestamp:
                oldest[key[0]] = env.timestamp
            if o.command is not None:
                prepared.commands.append(o)
        for tally, outcome in zip(tallies, ("result", "error"), strict=True):
            for action, n in tally.items():
                key = (_action(action), outcome, 2)
                counts[key] = counts.get(key, 0) + n

    def _command_done(self, o: Outcome, ended_ns: int) -> None:
        assert o.command is not None
        labels = {"ocpp.action": o.command.action, "ocpp.command.outcome": _command_outcome(o)}
        self._commands.add(1, labels)
        rtt = round_trip_s(o, ended_ns)
        if rtt is not None:
            self._round_trip.record(rtt, labels)

    def _trace(self, batch: Sequence[Delivery], outcomes: Sequence[Outcome]) -> list[Sampled]:
        """The spans of the batch's sampled messages. With a sampler that
        follows the parent's decision, a message whose trace was not sampled
        costs a look at its flags; one without a trace context (``-`` from
        adapters before, none now) was not sampled by the adapter, where
        traces start."""
        if self._follow_flags:
            flags = SAMPLED_FLAGS
            chosen = [(k, d) for k, d in enumerate(batch) if d.traceparent[53:] in flags]
        else:
            chosen = list(enumerate(batch))
        if not chosen:
            if self._follow_flags and self._untraced >= 0:
                self._notice_untraced(batch)
            return []
        self._untraced = min(self._untraced, 0)
        # Outcomes are in batch order; only failed handlers leave gaps.
        at = None
        if len(outcomes) != len(batch):
            at = {o.entry_id: n for n, o in enumerate(outcomes)}
        spans = []
        for k, d in chosen:
            tp = d.traceparent
            if self._follow_flags and _sampled_parent(tp):  # the common case: slices of it
                trace_id, parent_id = tp[3:35].decode(), tp[36:52].decode()
            else:
                parent = span_context(tp) if tp else None
                trace = parent.trace_id if parent else random_ids()[0]
                if not (self._follow_flags and parent and parent.trace_flags.sampled) and not (
                    sampled(self._tracer, parent_context(parent), trace, self._span_name,
                            SpanKind.CONSUMER)
                ):  # fmt: skip
                    continue
                trace_id, parent_id = f"{trace:032x}", f"{parent.span_id:016x}" if parent else ""
            n = k if at is None else at.get(d.entry_id)
            o = None if n is None else outcomes[n]
            spans.append(self._record(d, o, trace_id, parent_id, n))
        return spans

    def _notice_untraced(self, batch: Sequence[Delivery]) -> None:
        """Say once if entries keep coming without a trace context: the
        adapter's tracing is off, and a parent-following sampler then
        records nothing."""
        self._untraced = 0 if any(d.traceparent for d in batch) else self._untraced + len(batch)
        if self._untraced >= UNTRACED_WARNING_AFTER:
            log.warning(
                "the last %d entries carried no trace context, so no process spans were "
                "recorded for them: traces start in the adapter, give it the same OTEL_* "
                "settings (or use a sampler that ignores parents)", self._untraced,
            )  # fmt: skip
            self._untraced = -1  # said

    def _record(
        self,
        d: Delivery,
        o: Outcome | None,
        trace_id: str,
        parent_id: str,
        at: int | None,
    ) -> Sampled:
        # The attributes past the constant ones (self._span_attrs).
        attrs: Attributes = {"messaging.message.id": d.entry_id.decode()}
        if d.deliveries > 1:
            attrs["ocpp.deliveries"] = d.deliveries
        links: tuple[str, ...] = ()
        error = ""
        if o is None:
            error = "handler failed; left pending for a retry"
        else:
            _describe(o, attrs)
            if o.command is not None:
                linked = o.command.fields.get("traceparent", "")
                if span_context(linked) is not None:
                    links = (linked,)
                rtt = round_trip_s(o, time.time_ns())
                if rtt is not None:
                    attrs["ocpp.command.round_trip_ms"] = round(rtt * 1000, 3)
            if o.dead_reason:
                error = f"dead-lettered: {o.dead_reason}"
        return Sampled(trace_id, new_span_id(), parent_id, attrs, links, error, at)


_SAMPLED_TRACEPARENT = re.compile(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f][13579bdf]")


def _sampled_parent(traceparent: bytes) -> bool:
    """Whether ``traceparent`` is a valid version-00 one, sampled."""
    return (
        _SAMPLED_TRACEPARENT.fullmatch(traceparent) is not None
        and traceparent[3:35] != b"0" * 32
        and traceparent[36:52] != b"0" * 16
    )


# Both wait across batches (spans are held back, _defer): out of the garbage
# collector's sight, which would otherwise walk them in every older
# generation they reach. Neither can be in a reference cycle.


class Sampled(msgspec.Struct, gc=False):
    """A sampled message's span between :meth:`ProcessorTelemetry.prepare`
    and :meth:`~ProcessorTelemetry.done`, which knows its end and whether
    its effects failed."""

    trace_id: str
    span_id: str
    parent_id: str
    attributes: Attributes  # past the constant ones
    links: tuple[str, ...]
    error: str
    at: int | None  # its outcome's index, None if its handler failed


class Prepared(msgspec.Struct, gc=False):
    """A batch's telemetry between :meth:`ProcessorTelemetry.prepare` and
    :meth:`~ProcessorTelemetry.done`."""

    started_ns: int
    ended_ns: int = 0
    results: Sequence[Any] = ()  # the commit's, once done
    counts: dict[tuple[str, str, int], int] = msgspec.field(default_factory=dict)
    oldest: dict[str, str] = msgspec.field(default_factory=dict)
    commands: list[Outcome] = msgspec.field(default_factory=list)
    spans: list[Sampled] = msgspec.field(default_factory=list)


def _describe(o: Outcome, attrs: Attributes) -> None:
    env = o.envelope
    if env is not None:
        attrs["ocpp.charge_point_id"] = env.charge_point_id
        attrs["ocpp.message_type"] = env.message_type
        attrs["ocpp.message_id"] = env.message_id
        if env.action:
            attrs["ocpp.action"] = env.action
    action, outcome, _ = _outcome(o)
    if o.command is not None:
        attrs["ocpp.action"] = action
        attrs["ocpp.command.id"] = o.command.command_id
    attrs["ocpp.outcome"] = outcome
    if o.error_code:
        attrs["ocpp.error_code"] = o.error_code


def round_trip_s(o: Outcome, now_ns: int) -> float | None:
    """Seconds from sending ``o``'s command to now, if it was sent."""
    sent = o.command.fields.get("sent_at_ms", "") if o.command is not None else ""
    if not sent.isdigit():
        return None
    return max(0.0, now_ns / 1e9 - int(sent) / 1000)
