"""The hot paths' two ways out must be the same spans: encoded from a shape
in the service (when the exporter process posts OTLP/HTTP, it takes them as
they are), or as records the SDK builds and encodes (in process, and for any
other exporter). Compared as parsed protobuf, the SDK's encoding of the one
against ours of the other."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler

from adapters.list_to_stream import Contexts, MoveTelemetry
from processor import consumer_telemetry, keys, spans
from processor.commands import CommandRecord
from processor.consumer_telemetry import ProcessorTelemetry
from processor.dispatch import Delivery, Dispatcher, Limits, Outcome
from processor.otlp import SpanEncoder, request
from processor.protocols import protocols
from processor.spans import OTLP_FRAME_DECODER, SOCKET_BUFFER, WIRE_OTLP, OffloadedTracerProvider
from processor.spans import Shipper as _Shipper
from processor.types import HandlerConfig
from tests.messages import call
from tests.processor.memory_state import MemoryState

RESOURCE = {"service.name": "ocpp-test", "service.instance.id": "t-1"}
SENT_SPAN = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
NOW_NS = 1_700_000_000_123_456_789


def tp(n: int, flags: str = "01") -> bytes:
    return f"00-{n + 1:032x}-{n + 7:016x}-{flags}".encode()


def reply(message_id: str, payload: object) -> bytes:
    return json.dumps({"charge_point_id": "CP1", "message_type": 3, "message_id": message_id,
                       "payload": [3, message_id, payload]}).encode()  # fmt: skip


async def _outcomes(batch: list[Delivery]) -> list[Outcome]:
    state = MemoryState()
    fields = {"charge_point_id": "CP1", "action": "ClearCache", "state": "sent",
              "request": "{}", "traceparent": SENT_SPAN,
              "sent_at_ms": str(NOW_NS // 1_000_000 - 42)}  # fmt: skip
    state.commands["c1"] = CommandRecord("c1", "CP1", "ClearCache", "sent", fields)
    dispatcher = Dispatcher(protocols(), state, HandlerConfig(), Limits(max_deliveries=5))
    return await dispatcher.handle_batch(batch, datetime.now(UTC))


def a_batch() -> tuple[list[Delivery], list[Outcome], list[Any]]:
    """A batch with one of everything a process span can say, its outcomes
    with one handler failure, and commit results with one failed effect."""
    batch = [
        Delivery(b"1-0", call("CP1", "h1", "Heartbeat", {}), 1, tp(1)),
        Delivery(b"1-1", call("CP2", "h2", "Heartbeat", {}), 3, tp(2)),  # redelivered
        Delivery(b"1-2", call("CP3", "h3", "Heartbeat", {}), 1, tp(3, "00")),  # unsampled
        Delivery(b"1-3", call("CP4", "h4", "Heartbeat", {})),  # no context
        Delivery(b"1-4", b"not json", 1, tp(4)),  # dead-lettered
        Delivery(b"1-5", reply("c1", {"status": "Accepted"}), 1, tp(5)),  # a command's reply
        Delivery(b"1-6", call("CP5", "x1", "NoSuchAction", {}), 1, tp(6)),  # a CALLERROR
        Delivery(b"1-7", call("CP6", "h7", "Heartbeat", {}), 1, tp(7)),  # its effects fail
        Delivery(b"1-8", call("CP7", "h8", "Heartbeat", {}), 1, tp(8)),  # its handler fails
    ]
    outcomes = [o for o in anyio.run(_outcomes, batch) if o.entry_id != b"1-8"]
    results: list[Any] = [1] * len(outcomes)
    results[-1] = b"ERR some effect failed"
    return batch, outcomes, results


@pytest.fixture
def shipper() -> Iterator[tuple[_Shipper, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    yield _Shipper(ours, process, WIRE_OTLP), theirs
    ours.close()
    theirs.close()
    process.wait()


def shipped(sock: socket.socket) -> ExportTraceServiceRequest:
    """The spans sent on ``sock``, as the exporter process would post them."""
    by_scope: dict[str, list[bytes]] = {}
    while True:
        try:
            frame = sock.recv(SOCKET_BUFFER, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        for scope, span in OTLP_FRAME_DECODER.decode(frame):
            by_scope.setdefault(scope, []).append(span)
    assert by_scope, "nothing was shipped"
    return ExportTraceServiceRequest.FromString(request(SpanEncoder().resource(RESOURCE), by_scope))


def in_process(sampler: Sampler) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler, resource=Resource(RESOURCE))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.mark.parametrize(("sampler", "name"), [(ParentBased(ALWAYS_ON), "parentbased_always_on"),
                                                (ALWAYS_ON, "always_on")])  # fmt: skip
def test_process_spans_encoded_are_the_sdks(
    monkeypatch: pytest.MonkeyPatch,
    shipper: tuple[_Shipper, socket.socket],
    sampler: Sampler,
    name: str,
) -> None:
    monkeypatch.setattr(consumer_telemetry, "time", SimpleNamespace(time_ns=lambda: NOW_NS))
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", name)
    batch, outcomes, results = a_batch()

    def run(provider: Any) -> None:
        t = ProcessorTelemetry(provider, None, stream=keys.INBOUND, group=keys.GROUP)
        random.seed(7)  # the same span ids (and root trace ids) both ways
        anyio.run(handled, t)

    async def handled(t: ProcessorTelemetry) -> None:
        t.done(t.prepare(batch, outcomes, NOW_NS - 5_000), results, NOW_NS)
        t.flush()  # (the encoded path holds spans back to make them in one go)

    provider, exporter = in_process(sampler)
    run(provider)
    ship, theirs = shipper
    run(OffloadedTracerProvider(Resource(RESOURCE), ship))
    ship.flush()  # (held for a frame; the loop that would have flushed it is gone)
    sdk = encode_spans(exporter.get_finished_spans())
    assert shipped(theirs) == sdk
    [spans] = [ss.spans for rs in sdk.resource_spans for ss in rs.scope_spans]
    # Following parents: all but the unsampled one and the one without a
    # context; always_on keeps all.
    assert len(spans) == (9 if name == "always_on" else 7)
    assert sum(bool(s.links) for s in spans) == 1
    assert sum(s.status.code == 2 for s in spans) == 3  # dead, handler failed, effects failed


def test_adapter_spans_encoded_are_the_sdks(shipper: tuple[_Shipper, socket.socket]) -> None:
    contexts = Contexts("".join(f"{n + 1:016x}" for n in range(6)),
                        [(0, "a" * 32), (2, "b" * 32), (5, "c" * 32)])  # fmt: skip
    # 5 moved: the 6th is not; the 2nd and 3rd carried a traceparent.
    result = [5, 2, tp(20), 3, tp(21, "00")]  # as Redis returns it

    def run(provider: Any) -> None:
        MoveTelemetry(provider, None, keys.REQUESTS, keys.INBOUND).moved(
            contexts, result, NOW_NS - 1_000, NOW_NS
        )

    provider, exporter = in_process(ParentBased(ALWAYS_ON))
    run(provider)
    ship, theirs = shipper
    run(OffloadedTracerProvider(Resource(RESOURCE), ship))
    sdk = encode_spans(exporter.get_finished_spans())
    assert shipped(theirs) == sdk
    [spans] = [ss.spans for rs in sdk.resource_spans for ss in rs.scope_spans]
    assert [s.trace_id.hex() for s in spans] == ["a" * 32, f"{21:032x}"]  # 3rd: unsampled


def test_process_spans_are_held_back_to_be_made_in_one_go(
    monkeypatch: pytest.MonkeyPatch, shipper: tuple[_Shipper, socket.socket]
) -> None:
    monkeypatch.setattr(consumer_telemetry, "SPANS_PER_FLUSH", 10)
    monkeypatch.setattr(consumer_telemetry, "FLUSH_AFTER_S", 0.01)
    monkeypatch.setattr(spans, "FLUSH_AFTER_S", 0.01)  # the shipper's, for its frame
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)  # parentbased_always_on
    ship, theirs = shipper
    batch, outcomes, results = a_batch()  # 7 sampled messages

    def count() -> int:
        ship.flush()
        try:
            request = shipped(theirs)
        except AssertionError:  # nothing shipped
            return 0
        return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)

    async def main() -> None:
        provider = OffloadedTracerProvider(Resource(RESOURCE), ship)
        t = ProcessorTelemetry(provider, None, stream=keys.INBOUND, group=keys.GROUP)
        t.done(t.prepare(batch, outcomes, 1), results, 2)
        assert count() == 0  # left for the next batch to finish
        t.done(t.prepare(batch, outcomes, 3), results, 4)
        assert count() == 0  # the first finished, its spans held
        t.done(t.prepare(batch, outcomes, 5), results, 6)
        assert count() == 14  # the second finished, past SPANS_PER_FLUSH: made at once
        with anyio.fail_after(5):  # no more traffic: the timers finish the third, send it
            await anyio.wait_readable(theirs)
        assert count() == 7

    anyio.run(main)


def test_held_spans_are_not_stranded_by_a_loop_that_closed(
    monkeypatch: pytest.MonkeyPatch, shipper: tuple[_Shipper, socket.socket]
) -> None:
    monkeypatch.setattr(consumer_telemetry, "FLUSH_AFTER_S", 0.01)
    monkeypatch.setattr(spans, "FLUSH_AFTER_S", 0.01)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    ship, theirs = shipper
    batch, outcomes, results = a_batch()  # 7 sampled messages
    t = ProcessorTelemetry(OffloadedTracerProvider(Resource(RESOURCE), ship), None,
                           stream=keys.INBOUND, group=keys.GROUP)  # fmt: skip

    async def first() -> None:
        t.done(t.prepare(batch, outcomes, 1), results, 2)  # held; its timer dies with the loop

    async def second() -> None:
        t.done(t.prepare(batch, outcomes, 3), results, 4)
        with anyio.fail_after(5):  # a timer of this loop makes both batches' spans
            await anyio.wait_readable(theirs)

    asyncio.run(first())
    anyio.run(second)
    ship.flush()
    request = shipped(theirs)
    assert sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans) == 14
    t.done(t.prepare(batch, outcomes, 5), results, 6)  # outside any loop: made at once
    ship.flush()
    assert len(shipped(theirs).resource_spans[0].scope_spans[0].spans) == 7
