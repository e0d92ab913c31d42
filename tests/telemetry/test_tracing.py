"""Spans across the pipeline, on the real Redis: the adapter starts or
continues each envelope's trace, the processor continues it, and a reply to
one of our commands, on whichever replica, links to the span that sent it
(in the API, a child of the request's span)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis

from adapters.api import ApiSettings, create_app
from adapters.list_to_stream import ListToStream, MoveTelemetry
from processor import consumer_telemetry, keys, trace_context
from processor.command_queue import CommandQueue
from processor.consumer_telemetry import ProcessorTelemetry
from processor.dispatch import Delivery
from processor.telemetry import Providers
from tests.messages import call
from tests.telemetry.conftest import Telemetry, attrs, by_attr, consumer, eventually, running

pytestmark = pytest.mark.anyio

PROCESS = "process ocpp:inbound"
REQUEST = "POST /v1/charge-points/{charge_point_id}/commands/{action}"
SEND = "send ocpp:inbound"
THEIR_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
THEIR_SPAN = "00f067aa0ba902b7"


def with_traceparent(envelope: bytes, traceparent: str) -> bytes:
    return json.dumps({**json.loads(envelope), "traceparent": traceparent}).encode()


def reply(cp: str, message_id: str, payload: object) -> bytes:
    return json.dumps({"charge_point_id": cp, "message_type": 3, "message_id": message_id,
                       "payload": [3, message_id, payload],
                       "timestamp": "2024-01-01T12:00:01Z"}).encode()  # fmt: skip


async def test_reply_handled_by_the_other_replica_links_to_the_send_span(
    redis: Redis, redis_db: str, otel: Callable[..., Telemetry]
) -> None:
    a, b, api = otel(), otel(), otel()  # three processes: nothing shared but Redis
    replica_a, replica_b = consumer(redis, "A", a), consumer(redis, "B", b)
    app = create_app(ApiSettings(redis_url=redis_db),
                     Providers(api.tracer_provider, api.meter_provider))  # fmt: skip

    # Replica A sees the charger boot, then goes away.
    charger = {"chargePointVendor": "V", "chargePointModel": "M"}
    boot = call("CP1", "b1", "BootNotification", charger)
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: boot})
    async with running(replica_a):
        await eventually(lambda: len(a.finished(PROCESS)) == 1)
    async with AsyncTestClient(app=app) as http:
        resp = await http.post("/v1/charge-points/CP1/commands/RemoteStartTransaction",
                               json={"idTag": "T1"})  # fmt: skip
    assert resp.status_code == 202, resp.text
    record = await CommandQueue(redis).get(resp.json()["command_id"])
    assert record is not None and record.state == "sent"

    [request] = api.finished(REQUEST)
    assert request.kind is SpanKind.SERVER and request.parent is None
    assert attrs(request)["http.route"] == "/v1/charge-points/{charge_point_id}/commands/{action}"
    [send] = api.finished("send RemoteStartTransaction")
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None
    assert send.parent.span_id == request.context.span_id
    assert send.context.trace_id == request.context.trace_id
    assert attrs(send)["ocpp.message_id"] == record.command_id
    assert attrs(send)["ocpp.action"] == "RemoteStartTransaction"
    assert record.fields["traceparent"] == trace_context.traceparent(send.context)
    stored = await redis.hget(keys.command(record.command_id), "traceparent")
    assert stored == trace_context.traceparent(send.context).encode()

    # The charger's answer lands on replica B, which never saw the CALL.
    await redis.xadd(
        keys.INBOUND,
        {keys.ENVELOPE_FIELD: reply("CP1", record.command_id, {"status": "Accepted"})},
    )
    async with running(replica_b):
        await eventually(lambda: len(b.finished(PROCESS)) == 1)
    [handled] = b.finished(PROCESS)
    assert [link.context.span_id for link in handled.links] == [send.context.span_id]
    assert handled.links[0].context.trace_id == send.context.trace_id
    a_attrs = attrs(handled)
    assert a_attrs["ocpp.action"] == "RemoteStartTransaction"
    assert a_attrs["ocpp.outcome"] == "answered"
    assert a_attrs["ocpp.command.round_trip_ms"] >= 0
    assert a_attrs["ocpp.message_type"] == 3
    assert handled.kind is SpanKind.CONSUMER
    assert len(a.finished(PROCESS)) == 1  # A did not handle it

    [rtt] = b.points("ocpp.command.duration")
    assert rtt.count == 1
    assert dict(rtt.attributes) == {"ocpp.action": "RemoteStartTransaction",
                                    "ocpp.command.outcome": "answered"}  # fmt: skip


async def test_two_replicas_at_once_whichever_handles_the_reply_links_it(
    redis: Redis, otel: Callable[..., Telemetry]
) -> None:
    a, b = otel(), otel()
    queue = CommandQueue(redis, tracer_provider=a.tracer_provider)
    record = await queue.send("CP1", "ClearCache", b"{}")
    [send] = a.finished("send ClearCache")
    async with running(consumer(redis, "A", a), consumer(redis, "B", b)):
        for n in range(20):  # other traffic, spread over both
            await redis.xadd(
                keys.INBOUND, {keys.ENVELOPE_FIELD: call(f"CP{n}", f"h{n}", "Heartbeat", {})}
            )
        await redis.xadd(
            keys.INBOUND,
            {keys.ENVELOPE_FIELD: reply("CP1", record.command_id, {"status": "Accepted"})},
        )
        await eventually(lambda: len(a.finished(PROCESS)) + len(b.finished(PROCESS)) == 21)
    [handled] = [s for s in a.finished(PROCESS) + b.finished(PROCESS) if s.links]
    assert handled.links[0].context.span_id == send.context.span_id
    assert attrs(handled)["ocpp.command.id"] == record.command_id


async def test_without_tracing_a_command_keeps_the_traceparent_it_was_given(
    redis: Redis,
) -> None:
    queue = CommandQueue(redis, tracer_provider=trace.NoOpTracerProvider())
    theirs = f"00-{THEIR_TRACE}-{THEIR_SPAN}-01"
    assert (await queue.send("CP1", "ClearCache", b"{}")).fields["traceparent"] == ""
    record = await queue.send("CP2", "ClearCache", b"{}", traceparent=theirs)
    assert record.fields["traceparent"] == theirs


async def test_send_continues_a_given_traceparent_outside_any_span(
    redis: Redis, otel: Callable[..., Telemetry]
) -> None:
    t = otel()
    queue = CommandQueue(redis, tracer_provider=t.tracer_provider)
    theirs = f"00-{THEIR_TRACE}-{THEIR_SPAN}-01"
    record = await queue.send("CP1", "Reset", b'{"type":"Soft"}', traceparent=theirs)
    [send] = t.finished("send Reset")
    assert f"{send.context.trace_id:032x}" == THEIR_TRACE
    assert send.parent is not None and f"{send.parent.span_id:016x}" == THEIR_SPAN
    assert record.fields["traceparent"] == trace_context.traceparent(send.context)


async def test_adapter_starts_or_continues_each_trace_and_the_processor_continues_it(
    redis: Redis, otel: Callable[..., Telemetry]
) -> None:
    adapter_t, processor_t = otel(), otel()
    adapter = ListToStream(redis, tracer_provider=adapter_t.tracer_provider)
    theirs = f"00-{THEIR_TRACE}-{THEIR_SPAN}-01"
    await redis.lpush(keys.REQUESTS, with_traceparent(call("CP1", "m1", "Heartbeat", {}), theirs))
    await redis.lpush(keys.REQUESTS, call("CP2", "m2", "Heartbeat", {}))
    assert await adapter.move_once() == 2

    continued, started = adapter_t.finished(SEND)  # in arrival order
    assert continued.kind is SpanKind.PRODUCER
    assert f"{continued.context.trace_id:032x}" == THEIR_TRACE
    assert continued.parent is not None and f"{continued.parent.span_id:016x}" == THEIR_SPAN
    assert started.parent is None  # a trace of its own
    assert started.context.trace_id != continued.context.trace_id
    entries = await redis.xrange(keys.INBOUND)
    stored = [fields[b"tp"].decode() for _, fields in entries]
    assert stored == [trace_context.traceparent(continued.context),
                      trace_context.traceparent(started.context)]  # fmt: skip

    async with running(consumer(redis, "P", processor_t)):
        await eventually(lambda: len(processor_t.finished(PROCESS)) == 2)
    spans = processor_t.finished(PROCESS)
    for producer, cp in ((continued, "CP1"), (started, "CP2")):
        span = by_attr(spans, "ocpp.charge_point_id", cp)
        assert span.context.trace_id == producer.context.trace_id
        assert span.parent is not None and span.parent.span_id == producer.context.span_id
        assert attrs(span)["ocpp.action"] == "Heartbeat"
        assert attrs(span)["ocpp.outcome"] == "result"
        assert attrs(span)["messaging.message.id"] in {e.decode() for e, _ in entries}
        assert attrs(span)["messaging.system"] == "redis"
        assert attrs(span)["messaging.destination.name"] == keys.INBOUND
        assert attrs(span)["messaging.consumer.group.name"] == keys.GROUP
        assert attrs(span)["messaging.operation.type"] == "process"


async def test_unsampled_traces_cost_no_spans_anywhere(
    redis: Redis, otel: Callable[..., Telemetry]
) -> None:
    adapter_t, processor_t = otel(ParentBased(ALWAYS_OFF)), otel(ParentBased(ALWAYS_OFF))
    adapter = ListToStream(redis, tracer_provider=adapter_t.tracer_provider)
    theirs = f"00-{THEIR_TRACE}-{THEIR_SPAN}-00"
    await redis.lpush(keys.REQUESTS, with_traceparent(call("CP1", "m1", "Heartbeat", {}), theirs))
    await redis.lpush(keys.REQUESTS, call("CP2", "m2", "Heartbeat", {}))
    assert await adapter.move_once() == 2
    async with running(consumer(redis, "P", processor_t)):
        for cp in ("CP1", "CP2"):
            assert await redis.brpop([keys.responses(cp)], timeout=5)
    assert adapter_t.finished() == [] and processor_t.finished() == []
    theirs, ours = [fields for _, fields in await redis.xrange(keys.INBOUND)]
    assert theirs[b"tp"].startswith(f"00-{THEIR_TRACE}-".encode())  # continued,
    assert theirs[b"tp"].endswith(b"-00")  # unsampled as it came
    assert set(ours) == {b"e"}  # a trace of our own that is not sampled: nothing to carry


async def test_one_move_of_sampled_unsampled_and_continued_traces(
    redis: Redis, otel: Callable[..., Telemetry]
) -> None:
    adapter_t = otel(ParentBased(TraceIdRatioBased(0.5)))
    adapter = ListToStream(redis, batch=64, tracer_provider=adapter_t.tracer_provider)
    adapter._contexts = 64  # the whole list in one script
    sent = []
    for n in range(60):
        envelope = call(f"CP{n}", f"m{n}", "Heartbeat", {})
        if n % 7 == 3:  # some continue a trace of the sender's, sampled or not
            envelope = with_traceparent(envelope, f"00-{THEIR_TRACE}-{THEIR_SPAN}-0{n % 2}")
        sent.append(envelope)
        await redis.lpush(keys.REQUESTS, envelope)
    assert await adapter.move_once() == 60

    spans = {f"{s.context.span_id:016x}": s for s in adapter_t.finished(SEND)}
    recorded = 0
    for n, (_, fields) in enumerate(await redis.xrange(keys.INBOUND)):
        assert fields[b"e"] == sent[n]  # in order, untouched
        tp = fields.get(b"tp", b"").decode()
        if n % 7 == 3:
            _, trace_id, span_id, flags = tp.split("-")
            assert trace_id == THEIR_TRACE and flags == f"0{n % 2}"
            assert (span_id in spans) == (flags == "01")
        elif tp:  # a new trace, stored only because it is sampled
            _, trace_id, span_id, flags = tp.split("-")
            assert flags == "01" and spans[span_id].parent is None
            assert f"{spans[span_id].context.trace_id:032x}" == trace_id
        recorded += tp.endswith("-01")
    assert recorded == len(spans) > 8  # ~half of the 51 new traces, and 5 continued
    assert 0 < sum(s.parent is None for s in spans.values()) < 51


async def test_an_entry_without_a_trace_context_was_not_sampled_by_the_adapter(
    redis: Redis, otel: Callable[..., Telemetry]
) -> None:
    # The processor's sampler would keep a root; it follows the adapter's
    # decision instead, which an entry without a context says was "no".
    adapter_t, processor_t = otel(ParentBased(ALWAYS_OFF)), otel(ParentBased(ALWAYS_ON))
    adapter = ListToStream(redis, tracer_provider=adapter_t.tracer_provider)
    await redis.lpush(keys.REQUESTS, call("CP1", "m1", "Heartbeat", {}))
    assert await adapter.move_once() == 1
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: call("CP2", "m2", "Heartbeat", {}),
                                    "tp": "-"})  # as adapters before this one wrote it  # fmt: skip
    async with running(consumer(redis, "P", processor_t)):
        for cp in ("CP1", "CP2"):
            assert await redis.brpop([keys.responses(cp)], timeout=5)
    assert processor_t.finished() == []


async def test_a_processor_sampler_that_ignores_parents_roots_its_own_traces(
    redis: Redis, otel: Callable[..., Telemetry]
) -> None:
    processor_t = otel(ALWAYS_ON)  # as for an adapter with tracing off
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: call("CP1", "m1", "Heartbeat", {})})
    async with running(consumer(redis, "P", processor_t)):
        await eventually(lambda: len(processor_t.finished(PROCESS)) == 1)
    [span] = processor_t.finished(PROCESS)
    assert span.parent is None
    assert attrs(span)["ocpp.charge_point_id"] == "CP1"


async def test_tracing_off_stores_no_trace_field(redis: Redis) -> None:
    adapter = ListToStream(redis)  # the global provider: a no-op here
    await redis.lpush(keys.REQUESTS, call("CP1", "m1", "Heartbeat", {}))
    assert await adapter.move_once() == 1
    [(_, fields)] = await redis.xrange(keys.INBOUND)
    assert set(fields) == {keys.ENVELOPE_FIELD.encode()}


async def test_a_dead_lettered_message_is_an_error_span(
    redis: Redis, otel: Callable[..., Telemetry]
) -> None:
    t = otel()
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: b"not json"})
    async with running(consumer(redis, "P", t)):
        await eventually(lambda: len(t.finished(PROCESS)) == 1)
    [span] = t.finished(PROCESS)
    assert span.status.status_code.name == "ERROR"
    assert span.status.description is not None
    assert span.status.description.startswith("dead-lettered")
    assert attrs(span)["ocpp.outcome"] == "dead_letter"


class HighBit(Sampler):
    """Keeps traces by their trace id's top bit: no threshold on the low bits."""

    def should_sample(self, parent_context: Any, trace_id: int, *args: Any, **kw: Any) -> Any:
        keep = trace_id >> 127 == 1
        return SamplingResult(Decision.RECORD_AND_SAMPLE if keep else Decision.DROP)

    def get_description(self) -> str:
        return "HighBit"


@pytest.mark.parametrize(
    ("sampler", "bound"),
    [
        (ParentBased(TraceIdRatioBased(0.25)), TraceIdRatioBased.get_bound_for_rate(0.25)),
        (ALWAYS_ON, 1 << 64),
        (ParentBased(ALWAYS_OFF), 0),
        (HighBit(), None),
    ],
)
def test_the_adapter_samples_its_traces_as_the_sampler_says(
    otel: Callable[..., Telemetry], sampler: Sampler, bound: int | None
) -> None:
    adapter = MoveTelemetry(otel(sampler).tracer_provider, None, keys.REQUESTS, keys.INBOUND)
    assert adapter._bound == bound  # a comparison stands in for the sampler only if exact
    draws, count = 50, 400
    kept = 0
    for _ in range(draws):
        contexts = adapter.contexts(count)
        assert len(contexts.span_ids) == 16 * count and int(contexts.span_ids, 16)
        indices = [i for i, _ in contexts.sampled]
        assert indices == sorted(set(indices)) and all(0 <= i < count for i in indices)
        for _, trace_id in contexts.sampled:  # each id one the sampler itself keeps
            decision = sampler.should_sample(trace_context.ROOT, int(trace_id, 16), "send")
            assert decision.decision is Decision.RECORD_AND_SAMPLE
        kept += len(indices)
        assert contexts.roots == "".join(f"{i + 1:04x}{t}" for i, t in contexts.sampled)
    # As many kept as the sampler's rate says, within 5 standard deviations.
    n = draws * count
    rate = {None: 0.5, 0: 0.0}.get(bound, (bound or 0) / (1 << 64))
    assert abs(kept - n * rate) <= 5 * (n * rate * (1 - rate)) ** 0.5


def test_kept_trace_ids_are_uniform_below_the_bound(otel: Callable[..., Telemetry]) -> None:
    bound = TraceIdRatioBased.get_bound_for_rate(0.3)
    adapter = MoveTelemetry(otel(ParentBased(TraceIdRatioBased(0.3))).tracer_provider, None,
                            keys.REQUESTS, keys.INBOUND)  # fmt: skip
    ids = [int(t, 16) for _ in range(100) for _, t in adapter.contexts(400).sampled]
    n, low = len(ids), [i & ((1 << 64) - 1) for i in ids]
    assert all(x < bound for x in low)

    def even(count: int, share: float) -> bool:  # within 5 standard deviations
        return abs(count - n * share) <= 5 * (n * share * (1 - share)) ** 0.5

    # Each quarter below the bound as likely, the lowest bits and the high
    # half as random as any.
    assert all(even(sum(q * bound <= 4 * x < (q + 1) * bound for x in low), 0.25) for q in range(4))
    assert even(sum(x & 1 for x in low), 0.5)
    assert even(sum(i >> 127 for i in ids), 0.5)


def test_each_envelope_is_sampled_alike_whatever_its_place_in_the_move(
    otel: Callable[..., Telemetry],
) -> None:
    adapter = MoveTelemetry(otel(ParentBased(TraceIdRatioBased(0.5))).tracer_provider, None,
                            keys.REQUESTS, keys.INBOUND)  # fmt: skip
    draws, count = 4_000, 8
    kept = [0] * count
    for _ in range(draws):
        for i, _trace_id in adapter.contexts(count).sampled:
            kept[i] += 1
    # Each place within 5 standard deviations of half (a gap off by one
    # would starve the first or the last).
    assert all(abs(k - draws / 2) <= 5 * (draws / 4) ** 0.5 for k in kept), kept


class NearlyAll(Sampler):
    """Keeps every trace id but those with the highest low 64 bits."""

    def should_sample(self, parent_context: Any, trace_id: int, *args: Any, **kw: Any) -> Any:
        keep = trace_id & ((1 << 64) - 1) < (1 << 64) - 1
        return SamplingResult(Decision.RECORD_AND_SAMPLE if keep else Decision.DROP)

    def get_description(self) -> str:
        return "NearlyAll"


def test_a_bound_within_a_float_of_keeping_all_keeps_all(otel: Callable[..., Telemetry]) -> None:
    adapter = MoveTelemetry(otel(NearlyAll()).tracer_provider, None, keys.REQUESTS, keys.INBOUND)
    assert adapter._bound == (1 << 64) - 1  # bound / 2**64 rounds to 1.0
    contexts = adapter.contexts(100)
    assert [i for i, _ in contexts.sampled] == list(range(100))
    assert all(int(t, 16) & ((1 << 64) - 1) < (1 << 64) - 1 for _, t in contexts.sampled)


def test_a_processor_says_once_when_no_entry_carries_a_trace_context(
    otel: Callable[..., Telemetry], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setattr(consumer_telemetry, "UNTRACED_WARNING_AFTER", 5)
    t = ProcessorTelemetry(otel(ParentBased(ALWAYS_ON)).tracer_provider, None,
                           stream=keys.INBOUND, group=keys.GROUP)  # fmt: skip
    bare = [Delivery(f"1-{n}".encode(), b"{}") for n in range(3)]
    traced = [Delivery(b"2-0", b"{}", 1, f"00-{THEIR_TRACE}-{THEIR_SPAN}-00".encode())]
    with caplog.at_level(logging.WARNING, logger="processor.consumer_telemetry"):
        t.prepare(bare, [], 0)
        t.prepare(traced, [], 0)  # a context, even unsampled: the adapter traces
        t.prepare(bare, [], 0)
        assert caplog.records == []
        for _ in range(3):
            t.prepare(bare, [], 0)
    [said] = caplog.records
    assert "no trace context" in said.getMessage() and "OTEL_" in said.getMessage()
