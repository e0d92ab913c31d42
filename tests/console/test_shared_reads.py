"""The console's fleet-wide reads are shared: one read per Redis client at
a time and per FLEET_TTL_S, whatever the number of tabs polling."""

from __future__ import annotations

import anyio
import pytest
from redis.asyncio import Redis

from adapters.console.queries import _Shared

pytestmark = pytest.mark.anyio


async def test_concurrent_callers_share_one_read_until_it_is_stale() -> None:
    shared: _Shared[int] = _Shared(ttl=3600)
    redis, other = Redis(), Redis()  # never connected: only their identity counts
    reads = 0
    release = anyio.Event()

    async def read() -> int:
        nonlocal reads
        reads += 1
        await release.wait()
        return reads

    got: list[int] = []

    async def caller() -> None:
        got.append(await shared.get(redis, read))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(caller)
        await anyio.wait_all_tasks_blocked()
        release.set()
    assert got == [1] * 5 and reads == 1
    assert await shared.get(other, read) == 2  # another Redis: its own read
    stale: _Shared[int] = _Shared(ttl=0)
    assert [await stale.get(redis, read) for _ in range(2)] == [3, 4]
