from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from processor.redis_io import connect


@pytest.fixture
async def redis(redis_db: str) -> AsyncIterator[Redis]:
    client = connect(redis_db)
    yield client
    await client.aclose()
