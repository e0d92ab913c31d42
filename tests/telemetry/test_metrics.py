"""Metrics through an InMemoryMetricReader: messages by action and outcome,
processing time, end-to-end latency, the group's lag and pending count,
claims, dead letters and the adapter's moves."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from redis.asyncio import Redis

from adapters.list_to_stream import ListToStream, MoveTelemetry
from processor import batch_metrics, keys
from processor.command_queue import CommandQueue, Sweeper
from processor.consumer_telemetry import ProcessorTelemetry
from processor.stream import GroupStream
from tests.messages import call
from tests.telemetry.conftest import Telemetry, consumer, eventually, running

pytestmark = pytest.mark.anyio


def counts(t: Telemetry, metric: str) -> dict[tuple[tuple[str, object], ...], int]:
    return {tuple(sorted(p.attributes.items())): p.value for p in t.points(metric)}


async def test_messages_by_action_and_outcome_with_timings(
    redis: Redis, otel: Callable[..., Telemetry]
) -> None:
    t = otel()
    adapter = ListToStream(redis, meter_provider=t.meter_provider)
    for envelope in (
        call("CP1", "h1", "Heartbeat", {}),
        call("CP1", "h2", "Heartbeat", {}),
        call("CP2", "x1", "NoSuchAction", {}),
        b"garbage",
    ):
        await redis.lpush(keys.REQUESTS, envelope)
    assert await adapter.move_once() == 4
    async with running(consumer(redis, "P", t)):
        await eventually(lambda: sum(p.value for p in t.points("ocpp.messages")) == 4)

    assert counts(t, "ocpp.messages") == {
        (("ocpp.action", "Heartbeat"), ("ocpp.message_type", 2), ("ocpp.outcome", "result")): 2,
        (("ocpp.action", "other"), ("ocpp.message_type", 2), ("ocpp.outcome", "error")): 1,
        (("ocpp.action", ""), ("ocpp.message_type", 0), ("ocpp.outcome", "dead_letter")): 1,
    }
    assert counts(t, "ocpp.dead_letters") == {(("ocpp.action", ""),): 1}
    assert counts(t, "ocpp.adapter.moved") == {(("messaging.destination.name", keys.INBOUND),): 4}
    [duration] = t.points("messaging.process.duration")
    assert duration.count >= 1 and duration.sum >= 0
    assert dict(duration.attributes)["messaging.consumer.group.name"] == keys.GROUP
    # From the envelopes' 2024 timestamps: one per batch and action.
    latency = {p.attributes["ocpp.action"]: p for p in t.points("ocpp.message.latency")}
    assert set(latency) == {"Heartbeat", "other"}
    assert latency["Heartbeat"].min > 3600


async def test_group_lag_pending_and_claims(redis: Redis, otel: Callable[..., Telemetry]) -> None:
    t = otel()
    for n in range(3):
        await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: call("CP1", f"h{n}", "Heartbeat", {})})
    # A replica that read two entries and died: they stay pending.
    await redis.xgroup_create(keys.INBOUND, keys.GROUP, id="0")
    await redis.xreadgroup(keys.GROUP, "dead", {keys.INBOUND: ">"}, count=2)

    c = consumer(redis, "P", t, claim_min_idle_ms=1, batch_size=1)
    # Before it handles anything, the first look at the group: 2 pending, 1 new.
    assert t.points("ocpp.stream.pending") == []
    async with running(c):
        await eventually(lambda: sum(p.value for p in t.points("ocpp.claims")) == 2)
        await eventually(lambda: sum(p.value for p in t.points("ocpp.messages")) == 3)
    [pending] = t.points("ocpp.stream.pending")
    [lag] = t.points("ocpp.stream.lag")
    assert (pending.value, lag.value) == (2, 1)
    assert dict(pending.attributes) == {
        "messaging.system": "redis",
        "messaging.destination.name": keys.INBOUND,
        "messaging.consumer.group.name": keys.GROUP,
    }


async def test_group_stats_of_a_lost_stream_are_unknown(redis: Redis) -> None:
    stream = GroupStream(redis, "P")
    assert await stream.group_stats() == (None, None)
    await stream.ensure_group()
    assert await stream.group_stats() == (0, 0)


async def test_timed_out_commands_are_counted_by_the_sweeper(
    redis: Redis, otel: Callable[..., Telemetry]
) -> None:
    t = otel()
    queue = CommandQueue(redis)
    sweeper = Sweeper(queue, interval_s=0.02, meter_provider=t.meter_provider)
    sent = await queue.send("CP1", "Reset", b'{"type":"Soft"}', timeout_s=0.1)
    queued = await queue.send("CP1", "ClearCache", b"{}", timeout_s=0.1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(sweeper.run)
        for command in (sent, queued):
            done = await queue.wait(command.command_id, timeout_s=5)
            assert done is not None and done.state == "timed_out"
        sweeper.stop()
    outcome = ("ocpp.command.outcome", "timed_out")
    assert counts(t, "ocpp.commands") == {
        (("ocpp.action", "ClearCache"), outcome): 1,
        (("ocpp.action", "Reset"), outcome): 1,
    }


def test_histogram_values_wait_for_a_collection_but_not_forever(
    otel: Callable[..., Telemetry], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Recorded in one go when the reader collects; at once past the limit,
    # for a reader that never does (a pull exporter nobody scrapes).
    monkeypatch.setattr(batch_metrics, "PENDING_LIMIT", 5)
    t = otel()
    telemetry = ProcessorTelemetry(None, t.meter_provider, stream=keys.INBOUND, group=keys.GROUP)
    for n in range(3):
        telemetry.done(telemetry.prepare([], [], n), [], n + 1_000_000)
    assert telemetry._batch.pending == 3
    [duration] = t.points("messaging.process.duration")  # a collection
    assert duration.count == 3 and telemetry._batch.pending == 0
    for n in range(6):
        telemetry.done(telemetry.prepare([], [], n), [], n + 1_000_000)
    assert telemetry._batch.pending == 0  # the 6th went over the limit: all recorded
    [duration] = t.points("messaging.process.duration")
    assert duration.count == 9


def test_telemetries_on_one_meter_provider_all_count(otel: Callable[..., Telemetry]) -> None:
    # The SDK keeps one callback per observable instrument and meter: the
    # second telemetry's counts must not vanish into a callback it dropped.
    t = otel()
    a, b = (ProcessorTelemetry(None, t.meter_provider, stream=s, group=keys.GROUP)
            for s in ("s1", "s2"))  # fmt: skip
    for telemetry in (a, b, b):
        prepared = telemetry.prepare([], [], 0)
        prepared.counts["Heartbeat", "result", 2] = 1
        telemetry.done(prepared, [], 1_000_000)
    assert counts(t, "ocpp.messages") == {
        (("ocpp.action", "Heartbeat"), ("ocpp.message_type", 2), ("ocpp.outcome", "result")): 3
    }
    durations = {p.attributes["messaging.destination.name"]: p.count
                 for p in t.points("messaging.process.duration")}  # fmt: skip
    assert durations == {"s1": 1, "s2": 2}


def test_adapters_on_one_meter_provider_all_count(otel: Callable[..., Telemetry]) -> None:
    t = otel()
    a, b = (MoveTelemetry(None, t.meter_provider, keys.REQUESTS, keys.INBOUND) for _ in range(2))
    a.count(3)
    b.count(2, trimmed=4)
    assert counts(t, "ocpp.adapter.moved") == {(("messaging.destination.name", keys.INBOUND),): 5}
    assert counts(t, "ocpp.adapter.trimmed") == {(("messaging.destination.name", keys.INBOUND),): 4}


def test_a_batch_whose_telemetry_fails_costs_that_batch_alone(
    otel: Callable[..., Telemetry],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Batches are finished in the next one's prepare(), while its commit is
    # in flight: a failure there must not stop the consumer or the batches
    # after it.
    t = otel()
    telemetry = ProcessorTelemetry(None, t.meter_provider, stream=keys.INBOUND, group=keys.GROUP)
    add, calls = telemetry._batch.add, []

    def failing_once(*args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        add(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(telemetry._batch, "add", failing_once)

    async def main() -> None:
        for n in range(3):
            prepared = telemetry.prepare([], [], n)  # finishes the batch before
            prepared.counts["Heartbeat", "result", 2] = 1
            telemetry.done(prepared, [], n + 1_000_000)  # in a loop: left for later
        telemetry.flush()

    anyio.run(main)
    assert len(calls) == 3
    assert "recording a batch's telemetry failed" in caplog.text
    assert counts(t, "ocpp.messages") == {
        (("ocpp.action", "Heartbeat"), ("ocpp.message_type", 2), ("ocpp.outcome", "result")): 2
    }
