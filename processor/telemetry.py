"""OpenTelemetry: providers from the standard ``OTEL_*`` environment, trace
context as W3C ``traceparent`` text, spans recorded off the hot path, and
what the processor records.

Nothing is exported unless an exporter is configured, by
``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` (``otlp``, ``console``,
any installed exporter, ``none``) or by an OTLP endpoint
(``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_ENDPOINT``, which implies ``otlp``).
Unconfigured, the providers are the API's no-ops and the services skip
telemetry altogether: the hot paths test a flag, they don't make a no-op span
per message. Everything else is the SDK's own handling of the environment:
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``
(+``_ARG``), ``OTEL_EXPORTER_OTLP_*`` (``_PROTOCOL`` ``grpc`` or
``http/protobuf``, the default), ``OTEL_BSP_*``, ``OTEL_METRIC_EXPORT_*``,
``OTEL_SDK_DISABLED``.

A message's trace starts in the adapter (or continues the ``traceparent``
the ws-server put in the envelope) and travels in the stream entry's ``tp``
field: a traceparent if sampled, ``-`` if not (nothing downstream records an
unsampled trace, so nothing is carried for it). The Python SDK costs tens
of µs per span to build and as much again to encode, more than handling the
message does, so the hot paths keep the decisions (sampling, which parent)
and describe each sampled span as a
:class:`SpanRecord`. A :class:`SpanRecorder` turns records into spans: in
process, through the tracer provider the service was given (tests), or, for
providers made by :func:`from_env`, in an exporter process of its own that
runs at a lower CPU priority and is fed through a socket that never blocks
(a full socket drops spans, as a full SDK queue would). Metrics are summed
per batch, not recorded per message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Protocol

import msgspec
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk import metrics as sdk_metrics
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

from processor import clock
from processor.dispatch import Delivery, Outcome
from processor.messages import REQUESTS

log = logging.getLogger(__name__)

TRACE_FIELD = "tp"  # stream entry field holding the message's traceparent
PROCESS_SPAN = "process"
GROUP_STATS_INTERVAL_S = 5.0
# messaging.*.duration advice from the semantic conventions, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
LATENCY_BUCKETS = (0.001, 0.0025, *DURATION_BUCKETS, 30, 60, 300)
ROOT = Context()  # an empty context: a span started in it is a root
# Instrumentation scopes, one per component.
COMMAND_SCOPE = "ocpp.commands"
PROCESSOR_SCOPE = "ocpp.processor"
ADAPTER_SCOPE = "ocpp.adapter"
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_KNOWN_ACTIONS = frozenset(REQUESTS)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)
_RECORDS_PER_FRAME = 100  # ~40 kB: well within the socket's buffer
_SOCKET_BUFFER = 4 << 20


# -- providers ---------------------------------------------------------------


@dataclass(frozen=True)
class Providers:
    """What a service injects into its parts; :meth:`shutdown` flushes."""

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider

    def shutdown(self) -> None:
        if isinstance(self.tracer_provider, sdk_trace.TracerProvider):
            self.tracer_provider.shutdown()
        if isinstance(self.meter_provider, sdk_metrics.MeterProvider):
            self.meter_provider.shutdown()


def disabled() -> Providers:
    return Providers(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider())


@contextlib.contextmanager
def configured(service_name: str) -> Iterator[Providers]:
    """:func:`from_env`'s providers for the life of a service, shut down (and
    so flushed) after it. A bad ``OTEL_*`` setting stops the service at start,
    saying why."""
    try:
        providers = from_env(service_name)
    except ValueError as exc:
        raise SystemExit(f"OpenTelemetry configuration: {exc}") from None
    try:
        yield providers
    finally:
        providers.shutdown()


def from_env(default_service_name: str, *, offload: bool = True) -> Providers:
    """Providers as the ``OTEL_*`` environment configures them (module doc);
    spans are exported by a child process unless ``offload`` is False (or
    the platform has no SOCK_SEQPACKET). Raises ValueError for an unknown
    exporter or OTLP protocol."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return disabled()
    span_exporters = [_exporter(name, "traces") for name in _exporter_names("traces")]
    readers: list[MetricReader] = []
    for name in _exporter_names("metrics"):
        cls = _exporter(name, "metrics")
        # Pull exporters (prometheus) are readers themselves.
        pull = issubclass(cls, MetricReader)
        readers.append(cls() if pull else PeriodicExportingMetricReader(cls()))
    if not span_exporters and not readers:
        return disabled()
    resource = _resource(default_service_name)
    tracer_provider: trace.TracerProvider = trace.NoOpTracerProvider()
    shipper = _start_exporter(resource) if span_exporters and offload else None
    if shipper is not None:
        tracer_provider = OffloadedTracerProvider(resource, shipper)
    elif span_exporters:
        # The sampler comes from OTEL_TRACES_SAMPLER (default parentbased_always_on).
        sdk = sdk_trace.TracerProvider(resource=resource)
        for cls in span_exporters:
            sdk.add_span_processor(BatchSpanProcessor(cls()))
        tracer_provider = sdk
    meter_provider: metrics.MeterProvider = metrics.NoOpMeterProvider()
    if readers:
        meter_provider = sdk_metrics.MeterProvider(metric_readers=readers, resource=resource)
    return Providers(tracer_provider, meter_provider)


def _exporter_names(signal: str) -> list[str]:
    names = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER")
    if names is None:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
            f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    return [n for n in (part.strip() for part in names.split(",")) if n and n != "none"]


def _exporter(name: str, signal: str) -> Any:
    """The exporter class registered under ``name`` for ``signal``, by the
    entry points the SDK's own auto-configuration uses."""
    if name == "otlp":
        protocol = (
            os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        ).strip()
        if protocol not in _OTLP_BY_PROTOCOL:
            raise ValueError(f"unsupported OTLP protocol {protocol!r} for {signal}")
        name = _OTLP_BY_PROTOCOL[protocol]
    found = entry_points(group=f"opentelemetry_{signal}_exporter", name=name)
    if not found:
        raise ValueError(f"OTEL_{signal.upper()}_EXPORTER: no exporter named {name!r} installed")
    return next(iter(found)).load()


def _resource(default_service_name: str) -> Resource:
    resource = Resource.create()
    defaults: dict[str, str] = {}
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        defaults["service.name"] = default_service_name
    if "service.instance.id" not in resource.attributes:
        # Replicas must not merge into one series (Prometheus' instance label).
        defaults["service.instance.id"] = f"{socket.gethostname()}-{os.getpid()}"
    return resource.merge(Resource(defaults)) if defaults else resource


def tracing(tracer: trace.Tracer) -> bool:
    """Whether spans from ``tracer`` can be recorded at all."""
    return isinstance(tracer, sdk_trace.Tracer)


def metering(meter: metrics.Meter) -> bool:
    return isinstance(meter, sdk_metrics.Meter)


# -- trace context as text ---------------------------------------------------

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def span_context(traceparent: str | bytes) -> SpanContext | None:
    """The remote span context a W3C ``traceparent`` names, or None if it
    is not a valid version-00 one."""
    text = traceparent.decode(errors="replace") if isinstance(traceparent, bytes) else traceparent
    m = _TRACEPARENT.fullmatch(text)
    if m is None:
        return None
    trace_id, span_id = int(m[1], 16), int(m[2], 16)
    if not (trace_id and span_id):
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(m[3], 16)))


def traceparent(sc: SpanContext) -> str:
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags) & 0xFF:02x}"


def parent_context(sc: SpanContext | None) -> Context:
    """A context whose parent is ``sc``; the empty (root) one for None."""
    return ROOT if sc is None else trace.set_span_in_context(NonRecordingSpan(sc), ROOT)


_SAMPLED_FLAGS = frozenset(f"{n:02x}".encode() for n in range(256) if n & 1)


def follows_parent(tracer: trace.Tracer) -> bool:
    """Whether ``tracer``'s sampler drops every child of a remote parent that
    was not sampled, as the ``parentbased_*`` samplers do: then such a
    message needs no span at all. Asked of the sampler, not assumed."""
    if not isinstance(tracer, sdk_trace.Tracer):
        return False
    unsampled = parent_context(SpanContext(1, 1, is_remote=True, trace_flags=TraceFlags(0)))
    # Trace id 1 is below any ratio's bound: a ratio sampler would keep it.
    result = tracer.sampler.should_sample(unsampled, 1, PROCESS_SPAN, SpanKind.CONSUMER)
    return result.decision is Decision.DROP


def sampled(
    tracer: trace.Tracer, context: Context, trace_id: int, name: str, kind: SpanKind
) -> bool:
    """The sampler's decision for a span ``tracer`` would start."""
    if not isinstance(tracer, sdk_trace.Tracer):
        return False
    decision = tracer.sampler.should_sample(context, trace_id, name, kind).decision
    return decision is Decision.RECORD_AND_SAMPLE


def random_ids() -> tuple[int, int]:
    """A new (trace id, span id), never zero."""
    return random.getrandbits(128) or 1, random.getrandbits(64) or 1


def new_span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


# -- spans as records ------------------------------------------------------------

Attributes = dict[str, str | int | float | bool]


class SpanRecord(msgspec.Struct, array_like=True, omit_defaults=True):
    """A finished, sampled span as plain data, ids in lowercase hex."""

    scope: str
    name: str
    kind: int  # SpanKind's value
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root; else a remote parent's span id
    start_ns: int
    end_ns: int
    attributes: Attributes
    links: list[str] = []  # traceparents of linked spans
    error: str = ""  # the status description of a failed span


class SpanRecorder(Protocol):
    """Turns records into exported spans."""

    def record(self, spans: Sequence[SpanRecord]) -> None: ...


class PresetIds(IdGenerator):
    """Hands out the next ids set on it, once, then those of ``fallback``:
    lets a span be recorded after the fact under ids chosen before."""

    def __init__(self, fallback: IdGenerator) -> None:
        self._fallback = fallback
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        trace_id, self.trace_id = self.trace_id, 0
        return trace_id or self._fallback.generate_trace_id()

    def generate_span_id(self) -> int:
        span_id, self.span_id = self.span_id, 0
        return span_id or self._fallback.generate_span_id()


class TracerRecorder:
    """Records each record as a span of ``provider``, at once, in process."""

    def __init__(self, provider: trace.TracerProvider) -> None:
        self._provider = provider
        self._tracers: dict[str, tuple[trace.Tracer, PresetIds | None]] = {}

    def _tracer(self, scope: str) -> tuple[trace.Tracer, PresetIds | None]:
        found = self._tracers.get(scope)
        if found is None:
            tracer = self._provider.get_tracer(scope)
            ids = None
            if isinstance(tracer, sdk_trace.Tracer):
                if not isinstance(tracer.id_generator, PresetIds):
                    tracer.id_generator = PresetIds(tracer.id_generator)
                ids = tracer.id_generator
            found = self._tracers[scope] = (tracer, ids)
        return found

    def record(self, spans: Sequence[SpanRecord]) -> None:
        for r in spans:
            tracer, ids = self._tracer(r.scope)
            parent = None
            if r.parent_id:
                parent = SpanContext(int(r.trace_id, 16), int(r.parent_id, 16), is_remote=True,
                                     trace_flags=TraceFlags(TraceFlags.SAMPLED))  # fmt: skip
            if ids is not None:
                ids.trace_id = 0 if parent else int(r.trace_id, 16)
                ids.span_id = int(r.span_id, 16)
            links = [Link(sc) for sc in map(span_context, r.links) if sc is not None]
            span = tracer.start_span(
                r.name, parent_context(parent), SpanKind(r.kind), r.attributes, links,
                start_time=r.start_ns, record_exception=False, set_status_on_exception=False,
            )  # fmt: skip
            if ids is not None:
                ids.trace_id = ids.span_id = 0
            if r.error:
                span.set_status(trace.StatusCode.ERROR, r.error)
            span.end(r.end_ns)


def recorder(provider: trace.TracerProvider) -> SpanRecorder:
    """Where a service's records go: the exporter process of a provider
    made by :func:`from_env`, else ``provider`` itself, in process."""
    if isinstance(provider, OffloadedTracerProvider):
        return provider.shipper
    return TracerRecorder(provider)


# -- the exporter process ---------------------------------------------------------

_frame_encoder = msgspec.msgpack.Encoder()
_frame_decoder = msgspec.msgpack.Decoder(list[SpanRecord])


class Shipper:
    """Sends records to the exporter process, a frame per call (or per
    hundred records). Never blocks: when the socket is full, or the process
    gone, the records are dropped and counted."""

    def __init__(self, sock: socket.socket, process: subprocess.Popen[bytes]) -> None:
        self._sock = sock
        self._process = process
        self.dropped = 0

    def record(self, spans: Sequence[SpanRecord]) -> None:
        for i in range(0, len(spans), _RECORDS_PER_FRAME):
            chunk = spans[i : i + _RECORDS_PER_FRAME]
            try:
                self._sock.send(_frame_encoder.encode(chunk))
            except OSError:  # full (BlockingIOError), or the exporter is gone
                if not self.dropped:
                    log.warning("span exporter not keeping up or gone: dropping spans")
                self.dropped += len(chunk)

    def close(self, timeout: float = 30.0) -> None:
        """Let the exporter export what it has, and wait for it to exit."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
        self._sock.close()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("span exporter still busy after %.0f s; stopping it", timeout)
            self._process.kill()
            self._process.wait()
        if self.dropped:
            log.warning("%d spans were dropped", self.dropped)


class _Shipping(sdk_trace.SpanProcessor):
    """Ships the spans made through the provider's API (command sends)."""

    def __init__(self, shipper: Shipper) -> None:
        self._shipper = shipper

    def on_end(self, span: sdk_trace.ReadableSpan) -> None:
        sc = span.context
        if sc is None or not sc.trace_flags.sampled:
            return
        parent = span.parent
        error = "" if span.status.is_ok else (span.status.description or "error")
        attributes: Attributes = {k: v for k, v in (span.attributes or {}).items()
                                  if isinstance(v, str | int | float | bool)}  # fmt: skip
        scope = span.instrumentation_scope.name if span.instrumentation_scope else COMMAND_SCOPE
        self._shipper.record([SpanRecord(
            scope, span.name, span.kind.value, f"{sc.trace_id:032x}", f"{sc.span_id:016x}",
            f"{parent.span_id:016x}" if parent else "", span.start_time or 0,
            span.end_time or 0, attributes, [traceparent(link.context) for link in span.links],
            error,
        )])  # fmt: skip


class OffloadedTracerProvider(sdk_trace.TracerProvider):
    """A tracer provider whose spans are exported by a child process: the
    SDK's sampler (from the environment) and API here, the building and
    encoding there."""

    def __init__(self, resource: Resource, shipper: Shipper) -> None:
        super().__init__(resource=resource, shutdown_on_exit=False)
        self.shipper = shipper
        self.add_span_processor(_Shipping(shipper))

    def shutdown(self) -> None:
        super().shutdown()
        self.shipper.close()


def _start_exporter(resource: Resource) -> Shipper | None:
    if not hasattr(socket, "SOCK_SEQPACKET"):
        return None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
    ours.setblocking(False)
    attributes = {k: v for k, v in resource.attributes.items() if isinstance(v, str | int | float)}
    process = subprocess.Popen(
        [sys.executable, "-m", "processor.telemetry", str(theirs.fileno()), json.dumps(attributes)],
        pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    theirs.close()
    return Shipper(ours, process)


class _Replay:
    """The exporter process's recorder: records become finished spans handed
    straight to the span processors. The SDK's Tracer is for timing spans
    that are running; these ended in the service, and building them through
    it would cost the exporter twice as much CPU."""

    def __init__(self, processors: Sequence[sdk_trace.SpanProcessor], resource: Resource) -> None:
        self._processors = processors
        self._resource = resource
        self._scopes: dict[str, InstrumentationScope] = {}

    def record(self, spans: Sequence[SpanRecord]) -> None:
        for r in spans:
            trace_id = int(r.trace_id, 16)
            parent = None
            if r.parent_id:
                parent = SpanContext(trace_id, int(r.parent_id, 16), True, _SAMPLED)
            context = SpanContext(trace_id, int(r.span_id, 16), False, _SAMPLED)
            scope = self._scopes.get(r.scope) or self._scopes.setdefault(
                r.scope, InstrumentationScope(r.scope)
            )
            span = sdk_trace.ReadableSpan(
                r.name, context, parent, self._resource, r.attributes,
                links=[Link(sc) for sc in map(span_context, r.links) if sc is not None],
                kind=SpanKind(r.kind), start_time=r.start_ns, end_time=r.end_ns,
                status=Status(StatusCode.ERROR, r.error) if r.error else _UNSET,
                instrumentation_scope=scope,
            )  # fmt: skip
            for processor in self._processors:
                processor.on_end(span)


def _export(fd: int, attributes: dict[str, Any]) -> None:
    """The exporter process: records from the socket ``fd`` become spans
    exported as the environment says, until the service closes the socket
    (or dies); then it flushes and returns."""
    from processor.logs import setup

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The service comes first: this process only gets CPU nobody else wants
    # (Linux's SCHED_IDLE, else a low priority); spans wait in the socket, or drop.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)
    setup("WARNING", f"{attributes.get('service.name', 'ocpp')}-exporter")
    processors: list[sdk_trace.SpanProcessor] = [
        BatchSpanProcessor(_exporter(name, "traces")()) for name in _exporter_names("traces")
    ]
    replay = _Replay(processors, Resource(attributes))
    sock = socket.socket(fileno=fd)
    try:
        while frame := sock.recv(_SOCKET_BUFFER):
            replay.record(_frame_decoder.decode(frame))
    finally:
        sock.close()
        for processor in processors:
            processor.shutdown()


# -- the processor -------------------------------------------------------------


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
        # (Which replica: the resource's service.instance.id says.)
        self._label_cache: dict[tuple[str, str, int], dict[str, Any]] = {}
        self.lag: int | None = None
        self.pending: int | None = None
        self._messages = meter.create_counter(
            "ocpp.messages", "{message}", "messages handled, by action and outcome"
        )
        self._handling = meter.create_histogram(
            "messaging.process.duration", "s",
            "time from reading a batch to its commit; one measurement per batch",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )  # fmt: skip
        self._latency = meter.create_histogram(
            "ocpp.message.latency", "s",
            "envelope timestamp to commit, per batch and action: its oldest message",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )  # fmt: skip
        self._claims = meter.create_counter(
            "ocpp.claims", "{message}", "entries taken over from other consumers"
        )
        self._dead = meter.create_counter(
            "ocpp.dead_letters", "{message}", "entries moved to the dead-letter stream"
        )
        self._commands = meter.create_counter(
            "ocpp.commands", "{command}", "replies to our commands, by action and outcome"
        )
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
        those whose handler failed left out."""
        prepared = Prepared(started_ns)
        if self.metering:
            self._tally(outcomes, prepared)
            if len(batch) > len(outcomes):
                prepared.counts["", "handler_failed", 0] = len(batch) - len(outcomes)
        if self._recorder is not None:
            prepared.spans = self._trace(batch, outcomes, started_ns)
        return prepared

    def done(self, prepared: Prepared, results: Sequence[Any], ended_ns: int) -> None:
        """Finish what :meth:`prepare` began, with the commit's ``results``."""
        if self.metering:
            for key, n in prepared.counts.items():
                self._messages.add(n, self._labels(key))
                if key[1] == "dead_letter":
                    self._dead.add(n, {"ocpp.action": key[0]})
            for o in prepared.commands:
                self._command_done(o, ended_ns)
            self._handling.record((ended_ns - prepared.started_ns) / 1e9, self._metric_attrs)
            for action, timestamp in prepared.oldest.items():
                received = clock.parse(timestamp)
                if received is not None:
                    latency = max(0.0, ended_ns / 1e9 - received.timestamp())
                    self._latency.record(latency, {"ocpp.action": _action(action)})
        if prepared.spans and self._recorder is not None:
            for span, at in prepared.spans:
                span.end_ns = ended_ns
                result = results[at] if at is not None and at < len(results) else None
                if isinstance(result, bytes) and not span.error:
                    span.error = f"effects failed: {result.decode(errors='replace')}"
            self._recorder.record([span for span, _ in prepared.spans])

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

    def _labels(self, key: tuple[str, str, int]) -> dict[str, Any]:
        labels = self._label_cache.get(key)
        if labels is None:
            labels = {"ocpp.action": key[0], "ocpp.outcome": key[1], "ocpp.message_type": key[2]}
            self._label_cache[key] = labels
        return labels

    def _command_done(self, o: Outcome, ended_ns: int) -> None:
        assert o.command is not None
        labels = {"ocpp.action": o.command.action, "ocpp.command.outcome": _command_outcome(o)}
        self._commands.add(1, labels)
        rtt = round_trip_s(o, ended_ns)
        if rtt is not None:
            self._round_trip.record(rtt, labels)

    def _trace(
        self, batch: Sequence[Delivery], outcomes: Sequence[Outcome], started_ns: int
    ) -> list[tuple[SpanRecord, int | None]]:
        """Records of the batch's sampled messages' spans, with the index of
        their outcome. With a parent-based sampler, a message whose trace
        was not sampled costs a look at its flags."""
        if self._follow_flags:
            flags = _SAMPLED_FLAGS
            batch = [d for d in batch if not d.traceparent or d.traceparent[53:] in flags]
        if not batch:
            return []
        at = {o.entry_id: n for n, o in enumerate(outcomes)}
        spans = []
        for d in batch:
            parent = span_context(d.traceparent) if d.traceparent else None
            trace_id = parent.trace_id if parent else random_ids()[0]
            if not (self._follow_flags and parent and parent.trace_flags.sampled) and not sampled(
                self._tracer, parent_context(parent), trace_id, self._span_name, SpanKind.CONSUMER
            ):
                continue
            n = at.get(d.entry_id)
            o = None if n is None else outcomes[n]
            spans.append((self._record(d, o, trace_id, parent, started_ns), n))
        return spans

    def _record(
        self, d: Delivery, o: Outcome | None, trace_id: int, parent: SpanContext | None, start: int
    ) -> SpanRecord:
        attrs: Attributes = {**self._span_attrs, "messaging.message.id": d.entry_id.decode()}
        if d.deliveries > 1:
            attrs["ocpp.deliveries"] = d.deliveries
        links: list[str] = []
        error = ""
        if o is None:
            error = "handler failed; left pending for a retry"
        else:
            _describe(o, attrs)
            if o.command is not None:
                linked = o.command.fields.get("traceparent", "")
                if span_context(linked) is not None:
                    links.append(linked)
                rtt = round_trip_s(o, time.time_ns())
                if rtt is not None:
                    attrs["ocpp.command.round_trip_ms"] = round(rtt * 1000, 3)
            if o.dead_reason:
                error = f"dead-lettered: {o.dead_reason}"
        return SpanRecord(
            PROCESSOR_SCOPE, self._span_name, SpanKind.CONSUMER.value, f"{trace_id:032x}",
            new_span_id(), f"{parent.span_id:016x}" if parent else "", start, 0, attrs, links,
            error,
        )  # fmt: skip


@dataclass(slots=True)
class Prepared:
    """A batch's telemetry between :meth:`ProcessorTelemetry.prepare` and
    :meth:`~ProcessorTelemetry.done`."""

    started_ns: int
    counts: dict[tuple[str, str, int], int] = field(default_factory=dict)
    oldest: dict[str, str] = field(default_factory=dict)
    commands: list[Outcome] = field(default_factory=list)
    spans: list[tuple[SpanRecord, int | None]] = field(default_factory=list)


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


if __name__ == "__main__":
    _export(int(sys.argv[1]), json.loads(sys.argv[2]))
