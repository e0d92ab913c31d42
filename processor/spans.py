"""Sampled spans as plain records (:class:`SpanRecord`), made by the hot
paths after the fact, and where they go: through a tracer provider in
process (tests), or to the exporter process (processor/span_exporter.py)
through a socket that never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Protocol

import msgspec
from opentelemetry import metrics, trace
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

from processor.otlp import SpanEncoder, SpanShape
from processor.span_record import Attributes, SpanRecord
from processor.trace_context import parent_context, span_context, traceparent

log = logging.getLogger(__name__)

COMMAND_SCOPE = "ocpp.commands"
PROCESSOR_SCOPE = "ocpp.processor"
ADAPTER_SCOPE = "ocpp.adapter"
RECORDS_PER_FRAME = 400  # ~200 kB: within the socket buffer Linux grants (wmem_max)
SOCKET_BUFFER = 4 << 20
FLUSH_AFTER_S = 1.0


# -- spans as records ------------------------------------------------------------


def command_counter(meter: metrics.Meter) -> metrics.Counter:
    """``ocpp.commands``: replies to our commands by action and outcome
    (counted by the processor that handles them), and timeouts (counted by
    the sweeper that times them out)."""
    return meter.create_counter(
        "ocpp.commands", "{command}", "commands completed, by action and outcome"
    )


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


def shaped(
    recorder: SpanRecorder | None, name: str, kind: int, constant: Attributes
) -> tuple[Shipper, SpanShape] | None:
    """If ``recorder`` takes spans encoded (:meth:`Shipper.encoded`), it and
    a shape for spans named ``name`` of ``kind`` whose attributes start with
    ``constant``; else None, and spans go to it as records."""
    if isinstance(recorder, Shipper) and recorder.encoder is not None:
        return recorder, recorder.encoder.shape(name, kind, constant)
    return None


# -- the exporter process ---------------------------------------------------------

# What the exporter process is sent. By default records, for the SDK's
# exporters. When it exports by OTLP/HTTP alone, spans already encoded
# (processor/otlp.py), by scope: the hot paths encode theirs from a shape
# whose constant part is encoded once (~2 µs a span), which leaves the
# exporter only joining and posting. Decoding records and encoding them
# there cost it ~14 µs a span, and CPU spent at the lowest priority is not
# free: it evicts the caches of the processes it runs between.
WIRE_RECORDS = "records"
WIRE_OTLP = "otlp"
FRAME_ENCODER = msgspec.msgpack.Encoder()
FRAME_DECODER = msgspec.msgpack.Decoder(list[SpanRecord])
OTLP_FRAME_DECODER = msgspec.msgpack.Decoder(list[tuple[str, bytes]])


class Shipper:
    """Sends records to the exporter process in frames of up to
    ``RECORDS_PER_FRAME``. Records made in an event loop wait up to
    ``FLUSH_AFTER_S`` for others to share their frame: a frame costs both
    processes a system call and the exporter a wake-up, more than the few
    spans a batch of messages samples cost to pack. Never
    blocks: when the socket is full, or the process gone, the records are
    dropped and counted."""

    def __init__(
        self, sock: socket.socket, process: subprocess.Popen[bytes], wire: str = WIRE_RECORDS
    ) -> None:
        self._sock = sock
        self._process = process
        # Set for an exporter that takes spans encoded: make shapes with it.
        self.encoder = SpanEncoder() if wire == WIRE_OTLP else None
        self._lock = threading.Lock()  # the SDK may end spans in any thread
        self._buffer: list[SpanRecord | tuple[str, bytes]] = []
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # where a flush is due
        self._flush_timer: asyncio.TimerHandle | None = None
        self.dropped = 0

    def record(self, spans: Sequence[SpanRecord]) -> None:
        if self.encoder is not None:
            span = self.encoder.span
            self._add([(r.scope, span(r)) for r in spans])
        else:
            self._add(spans)

    def encoded(self, scope: str, spans: Sequence[bytes]) -> None:
        """Spans of ``scope`` encoded by a shape of :attr:`encoder`."""
        assert self.encoder is not None, "the exporter takes records"
        self._add([(scope, span) for span in spans])

    def _add(self, items: Sequence[SpanRecord | tuple[str, bytes]]) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # a thread, or no loop: nothing would flush later
            loop = None
        with self._lock:
            self._buffer += items
            if loop is None or len(self._buffer) >= RECORDS_PER_FRAME:
                self._send()
            elif self._flush_timer is None or self._flush_loop is not loop:
                # (A timer of a loop since closed never fires: one for this loop.)
                self._flush_timer = loop.call_later(FLUSH_AFTER_S, self.flush)
                self._flush_loop = loop

    @property
    def pid(self) -> int:
        """The exporter process's."""
        return self._process.pid

    def flush(self) -> None:
        with self._lock:
            self._send()

    def _send(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()  # else it would cut the next frame short
        self._flush_timer = self._flush_loop = None
        records, self._buffer = self._buffer, []
        for i in range(0, len(records), RECORDS_PER_FRAME):
            self._send_frame(records[i : i + RECORDS_PER_FRAME])

    def _send_frame(self, chunk: Sequence[SpanRecord | tuple[str, bytes]]) -> None:
        try:
            self._sock.send(FRAME_ENCODER.encode(chunk))
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE and len(chunk) > 1:  # big spans: halves fit
                self._send_frame(chunk[: len(chunk) // 2])
                self._send_frame(chunk[len(chunk) // 2 :])
                return
            # Full (BlockingIOError), or the exporter is gone.
            if not self.dropped:
                log.warning("span exporter not keeping up or gone: dropping spans")
            self.dropped += len(chunk)

    def close(self, timeout: float = 30.0) -> None:
        """Let the exporter export what it has, and wait for it to exit."""
        self.flush()
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

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        flushed = super().force_flush(timeout_millis)
        self.shipper.flush()  # to the exporter process, which exports in its own time
        return flushed

    def shutdown(self) -> None:
        super().shutdown()
        self.shipper.close()


def start_exporter(resource: Resource, wire: str) -> Shipper | None:
    if not hasattr(socket, "SOCK_SEQPACKET"):
        return None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    ours.setblocking(False)
    attributes = {k: v for k, v in resource.attributes.items() if isinstance(v, str | int | float)}
    process = subprocess.Popen(
        [sys.executable, "-m", "processor.span_exporter", str(theirs.fileno()),
         json.dumps(attributes), wire],
        pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    theirs.close()
    return Shipper(ours, process, wire)
