"""The consumer group's Redis operations, one method per round trip: read
new entries, re-read our own pending ones, claim abandoned ones, commit
outcomes, remove dead consumers. The policy of when to call which lives in
``processor/consumer.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from processor import clock, history, keys
from processor.dispatch import Delivery, Outcome
from processor.redis_io import ensure_group, script
from processor.trace_context import TRACE_FIELD

_packer = msgspec.msgpack.Encoder()
_ENVELOPE = keys.ENVELOPE_FIELD.encode()
_TRACE = TRACE_FIELD.encode()


def _delivery(entry_id: bytes, fields: dict[bytes, bytes], deliveries: int = 1) -> Delivery:
    # An entry without the envelope field was not written by the adapter; it
    # gets an empty envelope, which the dispatcher dead-letters as invalid.
    return Delivery(entry_id, fields.get(_ENVELOPE, b""), deliveries, fields.get(_TRACE, b""))


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class GroupStream:
    """``ocpp:inbound`` as seen by one consumer of the ``processors`` group."""

    def __init__(
        self,
        redis: Redis,
        consumer: str,
        *,
        stream: str = keys.INBOUND,
        group: str = keys.GROUP,
        dead: str = keys.DEAD,
        history: str = keys.HISTORY,
        reply_ttl_ms: int = 300_000,
        dead_maxlen: int = 100_000,
    ) -> None:
        self.redis = redis
        self.consumer = consumer
        self.stream = stream
        self.group = group
        self.dead = dead
        self.history = history
        self._commit_head: list[str | int] = [group, reply_ttl_ms, dead_maxlen, consumer]
        self._commit = script(redis, "processor", "commit", "pump")
        self._claim = script(redis, "processor", "claim")
        self._gc = script(redis, "processor", "gc")
        self._claim_cursor: bytes | str = "0-0"

    async def ensure_group(self) -> bool:
        return await ensure_group(self.redis, self.stream, self.group)

    async def read(
        self, count: int, block_ms: int | None, start: bytes | str = ">"
    ) -> list[Delivery]:
        """New entries (``start`` ``>``), or our own pending ones after ``start``."""
        reply: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=count, block=block_ms
        )
        if not reply:
            return []
        entries = reply[0][1]
        return [_delivery(entry_id, fields or {}) for entry_id, fields in entries]

    async def claim(self, min_idle_ms: int, count: int) -> tuple[list[Delivery], list[bytes]]:
        """Take over entries idle for ``min_idle_ms``, resuming the scan where
        the last call stopped. Also returns ids that were pending but had
        vanished from the stream (Redis dropped them from the group)."""
        cursor, entries, counts, deleted = await self._claim(
            keys=[self.stream],
            args=[self.group, self.consumer, min_idle_ms, self._claim_cursor, count],
        )
        self._claim_cursor = cursor
        out = []
        for (entry_id, flat), deliveries in zip(entries, counts, strict=True):
            fields = dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {}
            out.append(_delivery(entry_id, fields, int(deliveries)))
        return out, list(deleted)

    @property
    def claim_wrapped(self) -> bool:
        """The claim scan went through the whole pending list."""
        return self._claim_cursor in (b"0-0", "0-0")

    async def commit(self, outcomes: Sequence[Outcome]) -> list[Any]:
        """Ack, apply and reply for every outcome in one atomic script; see
        ``processor/lua/commit.lua`` for what each result means."""
        # Redis's cmsgpack has no bin type, so everything in the batch travels
        # as (UTF-8) str; raw envelopes and packed history records, which may
        # be any bytes, travel as extra arguments the batch refers to by
        # position.
        blobs: list[bytes] = []
        rows = []
        now = ""
        for o in outcomes:
            entry_id = o.entry_id.decode()
            raw_at = 0
            records = o.effects.records
            if o.dead_reason:
                blobs.append(o.raw)
                raw_at = len(blobs)
                now = now or clock.stored(datetime.now(UTC))
                cp = o.envelope.charge_point_id if o.envelope is not None else None
                dead = history.DeadLetter(entry_id, cp, o.dead_reason, o.raw, now)
                records = [*records, dead]
            history_at = 0
            if records:
                blobs.append(history.encode(records))
                history_at = len(blobs)
            rows.append(
                (entry_id, o.reply_key, o.reply.decode(), o.dead_reason, raw_at, o.effects.ops,
                 history_at)
            )  # fmt: skip
        result: list[Any] = await self._commit(
            keys=[self.stream, self.dead, self.history],
            args=[*self._commit_head, _packer.encode(rows), *blobs],
        )
        return result

    async def group_stats(self) -> tuple[int | None, int | None]:
        """The group's lag (entries not yet delivered to it; None when Redis
        cannot tell) and its pending count, by one XINFO GROUPS; (None,
        None) if the stream or group is missing."""
        try:
            groups = await self.redis.xinfo_groups(self.stream)
        except ResponseError:  # no such key: Redis lost the stream
            return None, None
        for info in groups:
            if _text(info.get("name")) == self.group:
                lag = info.get("lag")
                return (None if lag is None else int(lag)), int(info.get("pending") or 0)
        return None, None

    async def remove_idle_consumers(self, idle_ms: int) -> list[bytes]:
        removed: list[bytes] = await self._gc(
            keys=[self.stream], args=[self.group, idle_ms, self.consumer]
        )
        return removed
