"""The services' readiness probe against a real Redis."""

from __future__ import annotations

import socket

import pytest
from redis.asyncio import Redis

from processor import keys
from processor.health import redis_probe
from processor.redis_io import connect, ensure_group

pytestmark = pytest.mark.anyio


async def test_redis_answers(redis: Redis) -> None:
    assert await redis_probe(redis)() is None


async def test_the_group_must_exist(redis: Redis) -> None:
    probe = redis_probe(redis, group=keys.GROUP)
    missing = f"consumer group {keys.GROUP} missing on {keys.INBOUND}"
    assert await probe() == missing  # no stream at all
    await redis.xgroup_create(keys.INBOUND, "someone-else", mkstream=True)
    assert await probe() == missing
    await ensure_group(redis, keys.INBOUND, keys.GROUP)
    assert await probe() is None
    await redis.xgroup_destroy(keys.INBOUND, keys.GROUP)
    assert await probe() == missing


async def test_redis_down() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        client = connect(f"redis://127.0.0.1:{s.getsockname()[1]}/0")
        try:
            reason = await redis_probe(client)()
        finally:
            await client.aclose()
    assert reason is not None and reason.startswith("redis unreachable: ")


async def test_redis_silent() -> None:
    # Accepts connections (the backlog does) and never answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        client = connect(f"redis://127.0.0.1:{silent.getsockname()[1]}/0")
        try:
            reason = await redis_probe(client, timeout_s=0.2)()
        finally:
            await client.aclose()
    assert reason == "redis unreachable: no answer within 0.2 s"
