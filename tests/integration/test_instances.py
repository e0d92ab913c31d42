"""The registry of running instances (``ocpp:instances``) against a real
Redis, in this process: listed while running, dead ones pruned, and a
Redis that fails or says nothing never the service's problem."""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Awaitable, Callable

import anyio
import pytest
from redis.asyncio import Redis

from adapters.devstack import RedisServer
from processor import keys
from processor.instances import STALE_AFTER_MS, Instance, Registry, decode, encode, read
from processor.redis_io import connect
from tests.integration.test_commands import until

pytestmark = pytest.mark.anyio

NOW = 1_700_000_000_000
INTERVAL_S = 0.02


def instance(pid: int, last_seen_ms: int = NOW) -> Instance:
    return Instance(service="processor", host="node-1", pid=pid, consumer=f"node-1-{pid}",
                    started_ms=NOW, last_seen_ms=last_seen_ms)  # fmt: skip


def ticking() -> Callable[[], int]:
    """A clock a second further on at each reading."""
    return itertools.count(NOW, 1000).__next__


async def listed(redis: Redis, field: str) -> Instance | None:
    raw = await redis.hget(keys.INSTANCES, field)
    return None if raw is None else decode(raw)


async def test_listed_while_it_runs_and_removed_when_it_stops(redis: Redis) -> None:
    me = instance(1)
    registry = Registry(redis, me, interval_s=INTERVAL_S, clock=ticking())

    async def refreshed() -> bool:
        seen = await listed(redis, me.field)
        return seen is not None and seen.last_seen_ms >= NOW + 2000

    async with anyio.create_task_group() as tg:
        tg.start_soon(registry.run)
        await until(refreshed)
        seen = await listed(redis, me.field)
        assert seen is not None and seen == instance(1, seen.last_seen_ms)
        registry.stop()
    assert await redis.exists(keys.INSTANCES) == 0


async def test_the_dead_are_ignored_by_readers_and_pruned_by_a_refresh(redis: Redis) -> None:
    alive = instance(2, NOW - STALE_AFTER_MS)
    killed = instance(3, NOW - STALE_AFTER_MS - 1)
    entries = {alive.field: encode(alive), killed.field: encode(killed), "junk": b"{"}
    await redis.hset(keys.INSTANCES, mapping=entries)  # type: ignore[arg-type]
    assert await read(redis, NOW) == [alive]
    assert await redis.hlen(keys.INSTANCES) == 3  # a reader deletes nothing
    me = instance(1)
    await Registry(redis, me, clock=lambda: NOW).refresh()
    assert await read(redis, NOW) == [me, alive]
    assert sorted(await redis.hkeys(keys.INSTANCES)) == sorted([me.field.encode(),
                                                                alive.field.encode()])  # fmt: skip


async def test_redis_down_is_logged_once_and_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        redis = connect(f"redis://127.0.0.1:{s.getsockname()[1]}/0")
        readings: list[int] = []  # one a refresh

        def clock() -> int:
            readings.append(NOW)
            return NOW

        registry = Registry(redis, instance(1), interval_s=INTERVAL_S, clock=clock)

        async def tried_four_times() -> bool:
            return len(readings) >= 4

        with caplog.at_level(logging.WARNING, "processor.instances"), anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(registry.run)
                await until(tried_four_times)
                registry.stop()
        await redis.aclose()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert said[0].startswith("cannot keep processor@node-1:1 in ocpp:instances (ConnectionError: ")
    assert said[1].startswith("processor@node-1:1 left in ocpp:instances until it goes stale")


async def test_a_silent_redis_holds_nothing_up(caplog: pytest.LogCaptureFixture) -> None:
    # Accepts connections (the backlog does) and never answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        redis = connect(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        registry = Registry(redis, instance(1), interval_s=0.2)
        with caplog.at_level(logging.WARNING, "processor.instances"):
            with anyio.fail_after(2):
                await registry.refresh()  # gives up after the interval
            with anyio.fail_after(3):  # the stopping removal gives up after 1 s
                async with anyio.create_task_group() as tg:
                    tg.start_soon(registry.run)
                    await anyio.wait_all_tasks_blocked()
                    registry.stop()
        await redis.aclose()
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "cannot keep processor@node-1:1 in ocpp:instances (no answer within 0.2 s); "
        "trying again every 0.2 s",
        "processor@node-1:1 left in ocpp:instances until it goes stale (no answer within 1 s)",
    ]


async def test_listed_again_after_an_outage(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    redis = connect(private_redis.url)
    me = instance(1)
    registry = Registry(redis, me, interval_s=INTERVAL_S)

    def logged(text: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return any(text in r.getMessage() for r in caplog.records)

        return check

    async def is_listed() -> bool:
        return await listed(redis, me.field) is not None

    with caplog.at_level(logging.INFO, "processor.instances"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(registry.run)
            await until(is_listed)
            private_redis.stop()
            await until(logged("cannot keep"))
            private_redis.start()
            await until(logged("in ocpp:instances again"))
            # Asked on a connection of its own: the test's pooled one went
            # down with the server, and its first use after may fail.
            fresh = connect(private_redis.url)
            try:
                assert await listed(fresh, me.field) is not None
            finally:
                await fresh.aclose()
            registry.stop()
    await redis.aclose()
    said = [r.getMessage() for r in caplog.records]
    assert sum("cannot keep" in m for m in said) == 1, said
