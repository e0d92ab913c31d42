from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis as redis_sync
from redis.asyncio import Redis

from processor.redis_io import connect


@pytest.fixture
async def redis(redis_db: str) -> AsyncIterator[Redis]:
    client = connect(redis_db)
    yield client
    await client.aclose()


@pytest.fixture
def client(redis_db: str) -> Iterator[redis_sync.Redis]:
    """A blocking client, for tests that drive real services from outside."""
    c = redis_sync.Redis.from_url(redis_db)
    yield c
    c.close()
