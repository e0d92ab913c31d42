"""The exporter process: span records from a service's socket become
spans exported as the ``OTEL_*`` environment says. Started by
:func:`processor.spans.start_exporter` as ``python -m processor.span_exporter``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind
from opentelemetry.trace.status import Status, StatusCode

from processor.otlp import SpanEncoder, request
from processor.otlp_http import HttpConfig, HttpSender
from processor.span_record import SpanRecord
from processor.spans import FRAME_DECODER, OTLP_FRAME_DECODER, SOCKET_BUFFER, WIRE_OTLP
from processor.telemetry import exporter_class, exporter_names
from processor.trace_context import SAMPLED, span_context

log = logging.getLogger(__name__)

_UNSET = Status(StatusCode.UNSET)


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
                parent = SpanContext(trace_id, int(r.parent_id, 16), True, SAMPLED)
            context = SpanContext(trace_id, int(r.span_id, 16), False, SAMPLED)
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


def _export_sdk(sock: socket.socket, attributes: dict[str, Any]) -> None:
    processors: list[sdk_trace.SpanProcessor] = [
        BatchSpanProcessor(exporter_class(name, "traces")()) for name in exporter_names("traces")
    ]
    replay = _Replay(processors, Resource(attributes))
    try:
        while frame := sock.recv(SOCKET_BUFFER):
            replay.record(FRAME_DECODER.decode(frame))
    finally:
        for processor in processors:
            processor.shutdown()


def _export_otlp_http(sock: socket.socket, attributes: dict[str, Any]) -> None:
    """Spans, encoded by the service, batched as OTEL_BSP_* says: sent when
    a batch is full or the oldest span has waited the schedule delay, and at
    the end."""
    config = HttpConfig.from_env()
    sender = HttpSender(config)
    resource = SpanEncoder().resource(attributes)
    pending: dict[str, list[bytes]] = {}
    count = 0
    due = 0.0

    def flush() -> None:
        nonlocal count
        try:
            if count:
                sender.send(request(resource, pending), count)
        finally:
            pending.clear()
            count = 0

    try:
        while True:
            # (A zero timeout would make the socket non-blocking.)
            sock.settimeout(max(due - time.monotonic(), 0.001) if count else None)
            try:
                frame = sock.recv(SOCKET_BUFFER)
            except TimeoutError:
                flush()
                continue
            if not frame:
                break
            spans = OTLP_FRAME_DECODER.decode(frame)
            if count + len(spans) > config.batch_size:
                flush()
            if not count:
                due = time.monotonic() + config.delay_s
            for scope, span in spans:
                pending.setdefault(scope, []).append(span)
            count += len(spans)
    finally:
        flush()
        sender.close()
        if sender.dropped:
            log.warning("%d spans could not be exported", sender.dropped)


def main(fd: int, attributes: dict[str, Any], wire: str) -> None:
    """The exporter process: records from the socket ``fd`` become spans
    exported as the environment says, until the service closes the socket
    (or dies); then it flushes and returns."""
    from processor.logs import setup

    # It ends when the service closes the socket, having exported what it
    # holds: a signal for the whole process group (Ctrl-C, a service
    # manager stopping everything) would lose that.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The service comes first: this process only gets CPU nobody else wants
    # (Linux's SCHED_IDLE, else a low priority); spans wait in the socket, or drop.
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)
    setup("WARNING", f"{attributes.get('service.name', 'ocpp')}-exporter")
    sock = socket.socket(fileno=fd)
    try:
        (_export_otlp_http if wire == WIRE_OTLP else _export_sdk)(sock, attributes)
    finally:
        sock.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3])
