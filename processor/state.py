"""The Redis side of :class:`processor.types.State`.

Handlers of one batch run concurrently, a task per charger whose messages
read state (``processor/dispatch.py``), and each read they make in the same
turn of the event loop goes out in one round trip (:class:`Coalesced`): an
Authorize costs a share of one round trip, not a round trip of its own.
The round trip is :func:`processor.redis_io.round_trip`, not a redis-py
pipeline: that cost 12.5 µs of Python a command, this 3.4, and a Stop
makes three reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from processor import keys
from processor.commands import CommandRecord
from processor.redis_io import Command, round_trip, script
from processor.types import IdTagRecord, OpenedTransaction


def _text(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def decoded(fields: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    # decode_responses is off: redis-py's str | bytes is always bytes here.
    return {_str(k): _str(v) for k, v in fields.items()}


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _hash(reply: Any) -> dict[str, str]:
    """An HGETALL reply as text: a map in RESP3, field, value, ... in RESP2."""
    if isinstance(reply, dict):
        return decoded(reply)
    return _text(reply)


def _record(fields: dict[str, str]) -> IdTagRecord | None:
    if "status" not in fields:
        return None
    return IdTagRecord(fields["status"], fields.get("expiry_date"), fields.get("parent_id_tag"))


Read = tuple[Command, ...]


class Coalesced:
    """Reads issued in the same turn of the event loop, sent as one round trip.

    The first read of a turn schedules the send with ``call_soon``, which
    runs after every task already ready has reached its own first await:
    those tasks' reads ride along. Each caller gets its own commands' raw
    replies, or the first error among them; a failed round trip fails them
    all, as separate round trips would have.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._queue: list[tuple[Read, asyncio.Future[list[Any]]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def read(self, *commands: Command) -> list[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append((commands, future))
        if len(self._queue) == 1:
            loop.call_soon(self._send_queued)
        return await future

    def _send_queued(self) -> None:
        queue, self._queue = self._queue, []
        task = asyncio.ensure_future(self._send(queue))
        # Held until done: the loop keeps only weak references to tasks.
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, queue: list[tuple[Read, asyncio.Future[list[Any]]]]) -> None:
        try:
            results = await round_trip(self._redis, [c for commands, _ in queue for c in commands])
        except BaseException as exc:
            for _, future in queue:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for commands, future in queue:
            mine, at = results[at : at + len(commands)], at + len(commands)
            if future.done():  # its caller was cancelled
                continue
            error = next((r for r in mine if isinstance(r, Exception)), None)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(mine)


class RedisState:
    """Reads and idempotent reservations against the live Redis."""

    def __init__(self, redis: Redis, idempotency_ttl_s: int, max_session_s: int = 86_400) -> None:
        self._redis = redis
        self._reads = Coalesced(redis)
        self._ttl = idempotency_ttl_s
        self._max_session = max_session_s
        self._open = script(redis, "processor", "open_transaction")
        self._seen_script = script(redis, "processor", "seen")

    async def id_tag(self, tag: str) -> tuple[IdTagRecord | None, int | None]:
        fields, active = await self._reads.read(
            ("HGETALL", keys.id_tag(tag)), ("GET", keys.id_tag_active(tag))
        )
        return _record(_hash(fields)), int(active) if active else None

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
        script = self._open
        given: list[str] = [
            idempotency_key,
            keys.TXN_SEQ,
            keys.id_tag(id_tag),
            keys.id_tag_active(id_tag),
            keys.connector(charge_point_id, connector_id),
            keys.ACTIVE_TRANSACTIONS,
        ]
        args: list[str | int] = [
            self._ttl,
            keys.TXN_PREFIX,
            charge_point_id,
            connector_id,
            id_tag,
            meter_start,
            start_timestamp,
            "" if reservation_id is None else reservation_id,
            self._max_session,
        ]

        call: Command = ("EVALSHA", script.sha, len(given), *given, *args)
        try:
            [result] = await self._reads.read(call)
        except NoScriptError:
            # Redis restarted or was flushed since the script was loaded.
            # (Not redis-py's pipeline loading, which asks SCRIPT EXISTS on
            # every send.) The script is idempotent: running it now is safe.
            await self._redis.script_load(script.script)
            [result] = await self._reads.read(call)
        transaction_id, other, flat = result
        return OpenedTransaction(
            int(transaction_id), int(other) if other else None, _record(_text(flat))
        )

    async def transaction(self, transaction_id: int) -> dict[str, str] | None:
        return await self._hgetall(keys.transaction(transaction_id)) or None

    async def transaction_v201(self, charge_point_id: str, transaction_id: str) -> dict[str, str]:
        return await self._hgetall(keys.transaction_v201(charge_point_id, transaction_id))

    async def command(self, command_id: str) -> CommandRecord | None:
        fields = await self._hgetall(keys.command(command_id))
        return CommandRecord.from_hash(command_id, fields)

    async def charger_protocol(self, charge_point_id: str) -> str | None:
        [protocol] = await self._reads.read(
            ("HGET", keys.charge_point(charge_point_id), "protocol")
        )
        return bytes(protocol).decode() if protocol else None

    async def mark_seen(self, seen: Mapping[str, str]) -> None:
        # Newest wins: another replica may have written a later one since.
        flat = [x for pair in seen.items() for x in pair]
        await self._seen_script(args=flat)

    async def watched_chargers(self, now_ms: int) -> set[str]:
        [members] = await self._reads.read(("ZRANGEBYSCORE", keys.FRAMES_WATCHED, now_ms, "+inf"))
        return {_str(m) for m in members}

    async def is_known_charger(self, charge_point_id: str) -> bool:
        [known] = await self._reads.read(("SISMEMBER", keys.KNOWN_CHARGE_POINTS, charge_point_id))
        return bool(known)

    async def _hgetall(self, key: str) -> dict[str, str]:
        [fields] = await self._reads.read(("HGETALL", key))
        return _hash(fields)
