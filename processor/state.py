"""The Redis side of :class:`processor.types.State`."""

from __future__ import annotations

from redis.asyncio import Redis

from processor import keys
from processor.redis_io import script


class RedisState:
    """Reads and idempotent reservations against the live Redis."""

    def __init__(self, redis: Redis, idempotency_ttl_s: int) -> None:
        self._ttl = idempotency_ttl_s
        self._transaction_id = script(redis, "processor", "transaction_id")

    async def transaction_id(self, idempotency_key: str) -> int:
        result = await self._transaction_id(keys=[idempotency_key, keys.TXN_SEQ], args=[self._ttl])
        return int(result)
