"""The consumer loop in-process against a real Redis: retries that end in
the dead-letter stream, and a group that disappears under it."""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import json
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis.asyncio import Redis

from processor import keys
from processor.consumer import Consumer
from processor.consumer_telemetry import ProcessorTelemetry
from processor.dispatch import Dispatcher, Limits
from processor.handlers import ROUTES
from processor.settings import ProcessorSettings
from processor.state import RedisState
from processor.stream import GroupStream
from processor.types import HandlerConfig, OpenedTransaction
from tests.messages import call, start

pytestmark = pytest.mark.anyio


class Broken(RedisState):
    async def open_transaction(self, *args: Any) -> OpenedTransaction:
        raise RuntimeError("the state store is broken")


def consumer(redis: Redis, state: RedisState, name: str = "c1") -> Consumer:
    settings = ProcessorSettings(claim_min_idle_ms=1, claim_interval_ms=1, max_deliveries=3,
                                 read_block_ms=50)  # fmt: skip
    dispatcher = Dispatcher(ROUTES, state, HandlerConfig(), Limits(max_deliveries=3))
    return Consumer(GroupStream(redis, name), dispatcher, settings)


async def test_failing_message_is_retried_then_dead_lettered_and_answered(redis: Redis) -> None:
    c = consumer(redis, Broken(redis, 60))
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: start("CP1", "s1")})
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: call("CP2", "h1", "Heartbeat", {})})
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.run)
            # The healthy message is answered at once, the broken one at the end.
            first = await redis.brpop([keys.responses("CP2")], timeout=5)
            dead = await redis.xread({keys.DEAD: "0"}, block=8000)
            reply = await redis.brpop([keys.responses("CP1")], timeout=5)
            c.stop()
    assert first is not None
    assert json.loads(first[1])["payload"][0] == 3
    [(_, [(_, fields)])] = dead
    assert fields[b"reason"] == b"delivered 4 times, more than the limit of 3"
    assert fields[b"envelope"] == start("CP1", "s1")
    assert reply is not None
    assert json.loads(reply[1])["payload"][:3] == [4, "s1", "InternalError"]
    assert (await redis.xpending(keys.INBOUND, keys.GROUP))["pending"] == 0


async def test_group_is_recreated_when_redis_lost_it(redis: Redis) -> None:
    c = consumer(redis, RedisState(redis, 60))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.run)
            await redis.xadd(
                keys.INBOUND, {keys.ENVELOPE_FIELD: call("CP1", "h1", "Heartbeat", {})}
            )
            assert await redis.brpop([keys.responses("CP1")], timeout=5)
            # As if Redis restarted empty: stream and group gone, then new input.
            await redis.delete(keys.INBOUND)
            await redis.xadd(
                keys.INBOUND, {keys.ENVELOPE_FIELD: call("CP1", "h2", "Heartbeat", {})}
            )
            reply = await redis.brpop([keys.responses("CP1")], timeout=8)
            c.stop()
    assert reply is not None
    assert json.loads(reply[1])["message_id"] == "h2"


async def test_batch_telemetry_runs_once_the_commit_is_on_its_way(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The point of preparing telemetry during the commit is that Redis runs
    # the commit meanwhile: the commit's EVALSHA must have been written when
    # prepare() starts, however many loop steps redis-py takes to write it.
    written: list[bytes] = []
    seen_by_prepare: list[bytes] = []
    transport = asyncio.selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
    write, writelines = transport.write, transport.writelines

    def spy_write(self: Any, data: bytes) -> None:
        written.append(bytes(data))
        write(self, data)

    def spy_writelines(self: Any, data: Any) -> None:
        written.append(b"".join(data))
        writelines(self, data)

    prepare = ProcessorTelemetry.prepare

    def spy_prepare(self: ProcessorTelemetry, *args: Any) -> Any:
        seen_by_prepare.append(written[-1] if written else b"")
        return prepare(self, *args)

    monkeypatch.setattr(transport, "write", spy_write)
    monkeypatch.setattr(transport, "writelines", spy_writelines)
    monkeypatch.setattr(ProcessorTelemetry, "prepare", spy_prepare)
    reader = InMemoryMetricReader()  # telemetry on: metrics are enough
    settings = ProcessorSettings(read_block_ms=50)
    dispatcher = Dispatcher(ROUTES, RedisState(redis, 60), HandlerConfig(), Limits())
    c = Consumer(GroupStream(redis, "c1"), dispatcher, settings,
                 meter_provider=MeterProvider(metric_readers=[reader]))  # fmt: skip
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.run)
            for n in range(3):
                await redis.xadd(
                    keys.INBOUND, {keys.ENVELOPE_FIELD: call("CP1", f"h{n}", "Heartbeat", {})}
                )
                assert await redis.brpop([keys.responses("CP1")], timeout=5)
            c.stop()
    assert len(seen_by_prepare) >= 3
    for last in seen_by_prepare:
        assert b"EVALSHA" in last.upper(), f"prepare ran before the commit was sent: {last[:60]!r}"
