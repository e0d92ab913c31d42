"""The consumer loop in-process against a real Redis: retries that end in
the dead-letter stream, a group that disappears under it, and batches that
overlap (one handled while the previous one's commit runs)."""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import itertools
import json
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from adapters.devstack import wait_until
from processor import keys
from processor.consumer import Consumer
from processor.consumer_telemetry import ProcessorTelemetry
from processor.dispatch import Dispatcher, Limits
from processor.protocols import protocols
from processor.redis_io import TRANSIENT
from processor.settings import ProcessorSettings
from processor.state import RedisState
from processor.stream import GroupStream
from processor.types import HandlerConfig, OpenedTransaction
from tests.messages import call, start

pytestmark = pytest.mark.anyio


class Broken(RedisState):
    async def open_transaction(self, *args: Any) -> OpenedTransaction:
        raise RuntimeError("the state store is broken")


def consumer(
    redis: Redis,
    state: RedisState,
    name: str = "c1",
    stream: GroupStream | None = None,
    **settings: Any,
) -> Consumer:
    options = {"claim_min_idle_ms": 1, "claim_interval_ms": 1, "max_deliveries": 3,
               "read_block_ms": 50, **settings}  # fmt: skip
    dispatcher = Dispatcher(protocols(), state, HandlerConfig(), Limits(max_deliveries=3))
    return Consumer(stream or GroupStream(redis, name), dispatcher, ProcessorSettings(**options))


class HeldCommits(GroupStream):
    """Commits that wait for the test's word, and fail when it says so."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis, "c1")
        self.go = asyncio.Event()
        self.fail_next = False
        self.started = 0

    async def commit(self, outcomes: Any) -> list[Any]:
        self.started += 1
        await self.go.wait()
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("the commit's connection dropped")
        return await super().commit(outcomes)


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
    # How much had been written when each prepare() started.
    seen_by_prepare: list[int] = []
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
        seen_by_prepare.append(len(written))
        return prepare(self, *args)

    monkeypatch.setattr(transport, "write", spy_write)
    monkeypatch.setattr(transport, "writelines", spy_writelines)
    monkeypatch.setattr(ProcessorTelemetry, "prepare", spy_prepare)
    reader = InMemoryMetricReader()  # telemetry on: metrics are enough
    settings = ProcessorSettings(read_block_ms=50)
    dispatcher = Dispatcher(protocols(), RedisState(redis, 60), HandlerConfig(), Limits())
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
    # Between one prepare and the next, the commit it prepares for was
    # written first (the next batch's read may follow it: batches overlap).
    for before, upto in itertools.pairwise([0, *seen_by_prepare]):
        sent = b"".join(written[before:upto]).upper()
        assert b"EVALSHA" in sent, f"prepare ran before the commit was sent: {sent[-60:]!r}"


async def test_a_reader_waits_for_the_commit_in_flight(redis: Redis) -> None:
    # Batch 1 stops TAG's transaction, which frees the tag at its commit;
    # batch 2 authorizes TAG. Held, batch 1's commit has not run when batch
    # 2 is read: its Authorize must wait for it, not answer ConcurrentTx.
    tid = await RedisState(redis, 60).open_transaction(
        "idem", "CP1", 1, "TAG", 0, "2024-01-01T12:00:00Z", None)  # fmt: skip
    stream = HeldCommits(redis)
    # No claim tick between the two reads: a claim settles the commit in
    # flight first (the batch it holds would look idle), which is held here.
    c = consumer(redis, RedisState(redis, 60), stream=stream, batch_size=1,
                 claim_interval_ms=60_000)  # fmt: skip
    stop = {"transactionId": tid.transaction_id, "meterStop": 10,
            "timestamp": "2024-01-01T13:00:00Z"}  # fmt: skip
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: call("CP1", "s", "StopTransaction", stop)})
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: call("CP2", "a", "Authorize",
                                                              {"idTag": "TAG"})})  # fmt: skip
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: call("CP3", "h", "Heartbeat", {})})
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.run)

            async def both_read() -> bool:
                groups = await redis.xinfo_groups(keys.INBOUND)
                return bool(groups) and groups[0]["entries-read"] >= 2

            try:
                # Batch 2 was read while batch 1's commit is held ...
                await wait_until(both_read)
                assert stream.started == 1 and await redis.llen(keys.responses("CP2")) == 0
            finally:
                # Released whatever happened: a held, shielded commit would
                # otherwise outlive the test's deadline (a hang, not a failure).
                stream.go.set()
            authorized = await redis.brpop([keys.responses("CP2")], timeout=5)
            assert await redis.brpop([keys.responses("CP3")], timeout=5)
            c.stop()
    assert authorized is not None
    assert json.loads(authorized[1])["payload"][2] == {"idTagInfo": {"status": "Accepted"}}


async def test_a_failed_commit_in_flight_is_redone_before_the_next(redis: Redis) -> None:
    stream = HeldCommits(redis)
    stream.fail_next = True
    c = consumer(redis, RedisState(redis, 60), stream=stream, batch_size=1)
    for n in range(4):
        await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: call(f"CP{n}", f"h{n}", "Heartbeat",
                                                                  {})})  # fmt: skip
    stream.go.set()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.run)
            replies = [await redis.brpop([keys.responses(f"CP{n}")], timeout=5) for n in range(4)]
            c.stop()
    assert all(r is not None for r in replies)
    # Each once: nothing doubled by the redo, nothing left pending.
    assert [await redis.llen(keys.responses(f"CP{n}")) for n in range(4)] == [0, 0, 0, 0]
    assert (await redis.xpending(keys.INBOUND, keys.GROUP))["pending"] == 0
    assert c.handled == 4


class Unreachable(RedisState):
    async def id_tag(self, tag: str) -> Any:
        raise RedisConnectionError("the state store is unreachable")


async def test_stopping_through_a_redis_outage_gives_up_in_time(redis: Redis) -> None:
    # Every read of state fails as if Redis were gone: stop() must still end
    # the run after the grace for an outage, the entry left pending.
    state = Unreachable(redis, 60)
    dispatcher = Dispatcher(protocols(), state, HandlerConfig(), Limits(), transient=TRANSIENT)
    c = Consumer(GroupStream(redis, "c1"), dispatcher, ProcessorSettings(read_block_ms=50))
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: call("CP1", "a", "Authorize",
                                                              {"idTag": "T"})})  # fmt: skip
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(c.run)

            async def retrying() -> bool:
                return c._backoff.down

            await wait_until(retrying)
            c.stop()
    assert (await redis.xpending(keys.INBOUND, keys.GROUP))["pending"] == 1
