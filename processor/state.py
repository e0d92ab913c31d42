"""The Redis side of :class:`processor.types.State`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from processor import keys
from processor.commands import CommandRecord
from processor.redis_io import script
from processor.types import IdTagRecord, OpenedTransaction


def _text(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def decoded(fields: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    # decode_responses is off: redis-py's str | bytes is always bytes here.
    return {_str(k): _str(v) for k, v in fields.items()}


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _record(fields: dict[str, str]) -> IdTagRecord | None:
    if "status" not in fields:
        return None
    return IdTagRecord(fields["status"], fields.get("expiry_date"), fields.get("parent_id_tag"))


class RedisState:
    """Reads and idempotent reservations against the live Redis."""

    def __init__(self, redis: Redis, idempotency_ttl_s: int, max_session_s: int = 86_400) -> None:
        self._redis = redis
        self._ttl = idempotency_ttl_s
        self._max_session = max_session_s
        self._open = script(redis, "processor", "open_transaction")

    async def id_tag(self, tag: str) -> tuple[IdTagRecord | None, int | None]:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.id_tag(tag))
            pipe.get(keys.id_tag_active(tag))
            fields, active = await pipe.execute()
        record = _record(decoded(fields))
        return record, int(active) if active else None

    async def open_transaction(
        self,
        idempotency_key: str,
        charge_point_id: str,
        connector_id: int,
        id_tag: str,
        meter_start: int,
        start_timestamp: str,
        reservation_id: int | None,
    ) -> OpenedTransaction:
        result: list[Any] = await self._open(
            keys=[
                idempotency_key,
                keys.TXN_SEQ,
                keys.id_tag(id_tag),
                keys.id_tag_active(id_tag),
                keys.connector(charge_point_id, connector_id),
                keys.ACTIVE_TRANSACTIONS,
            ],
            args=[
                self._ttl,
                keys.TXN_PREFIX,
                charge_point_id,
                connector_id,
                id_tag,
                meter_start,
                start_timestamp,
                "" if reservation_id is None else reservation_id,
                self._max_session,
            ],
        )
        transaction_id, other, flat = result
        return OpenedTransaction(
            int(transaction_id), int(other) if other else None, _record(_text(flat))
        )

    async def transaction(self, transaction_id: int) -> dict[str, str] | None:
        fields = await self._redis.hgetall(keys.transaction(transaction_id))
        return decoded(fields) or None

    async def command(self, command_id: str) -> CommandRecord | None:
        fields = await self._redis.hgetall(keys.command(command_id))
        return CommandRecord.from_hash(command_id, decoded(fields))

    async def is_known_charger(self, charge_point_id: str) -> bool:
        return bool(await self._redis.sismember(keys.KNOWN_CHARGE_POINTS, charge_point_id))
