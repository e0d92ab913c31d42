"""The consumer group's Redis operations, one method per round trip: read
new entries, re-read our own pending ones, claim abandoned ones, commit
outcomes, remove dead consumers. The policy of when to call which lives in
``processor/consumer.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from processor import clock, history, keys
from processor.dispatch import Delivery, Outcome
from processor.redis_io import Command, ensure_group, group_backlog, round_trip, script
from processor.trace_context import TRACE_FIELD

_packer = msgspec.msgpack.Encoder()
_ENVELOPE = keys.ENVELOPE_FIELD.encode()
_TRACE = TRACE_FIELD.encode()


def _delivery(entry_id: bytes, fields: list[bytes] | None, deliveries: int = 1) -> Delivery:
    """An entry from its raw field, value, ... list (None for one deleted
    while pending). An entry without the envelope field was not written by
    the adapter; it gets an empty envelope, which the dispatcher
    dead-letters as invalid."""
    envelope = trace = b""
    if fields:
        for i in range(0, len(fields) - 1, 2):
            if fields[i] == _ENVELOPE:
                envelope = fields[i + 1]
            elif fields[i] == _TRACE:
                trace = fields[i + 1]
    return Delivery(entry_id, envelope, deliveries, trace)


class RecentAdds:
    """Set members this process has SADDed lately. Handlers add a charger's
    connector to its set with every MeterValues and StatusNotification: the
    member is almost always there already, and SADD from the commit script
    was a Redis command per message for nothing. A member added within
    ``ttl_s`` is not added again; after that it is, so a Redis that lost
    its data gets it back within ``ttl_s``."""

    def __init__(self, ttl_s: float = 60.0, max_size: int = 100_000) -> None:
        self._ttl = ttl_s
        self._max = max_size
        self._until: dict[tuple[str, str], float] = {}

    def fresh(self, ops: list[Any], now: float, batch: set[tuple[str, str]]) -> list[Any]:
        """``ops`` less SADDs made lately or earlier in this ``batch``, to
        which the SADDs it keeps are added."""
        kept = []
        for op in ops:
            if len(op) == 4 and op[1] == "SADD" and op[0] == "call":
                member = (op[2], op[3])
                if member in batch or self._until.get(member, 0.0) > now:
                    continue
                batch.add(member)
            kept.append(op)
        return kept

    def committed(self, added: set[tuple[str, str]], now: float) -> None:
        if len(self._until) + len(added) > self._max:
            self._until.clear()
        until = now + self._ttl
        for member in added:
            self._until[member] = until


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
        self._recent_adds = RecentAdds()

    async def ensure_group(self) -> bool:
        return await ensure_group(self.redis, self.stream, self.group)

    async def read(
        self, count: int, block_ms: int | None, start: bytes | str = ">"
    ) -> list[Delivery]:
        """New entries (``start`` ``>``), or our own pending ones after ``start``.

        A raw round trip (:func:`processor.redis_io.round_trip`): redis-py's
        XREADGROUP made a dict of each entry, ~1.4 µs of an entry's 3."""
        command: Command = ("XREADGROUP", "GROUP", self.group, self.consumer,
                                          "COUNT", count)  # fmt: skip
        wait_s = 0.0
        if block_ms is not None:
            command += ("BLOCK", block_ms)
            wait_s = block_ms / 1000 if block_ms else math.inf  # BLOCK 0: for ever
        command += ("STREAMS", self.stream, start)
        [reply] = await round_trip(self.redis, [command], wait_s)
        if isinstance(reply, ResponseError):
            raise reply
        if not reply:
            return []
        # RESP3: {stream: entries}; RESP2: [[stream, entries]].
        [entries] = reply.values() if isinstance(reply, dict) else [reply[0][1]]
        return [_delivery(entry_id, fields) for entry_id, fields in entries]

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
            out.append(_delivery(entry_id, flat, int(deliveries)))
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
        # Flat, as the script reads it (its header says how).
        flat: list[Any] = []
        now = ""
        clock_now = time.monotonic()
        added: set[tuple[str, str]] = set()
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
            ops = self._recent_adds.fresh(o.effects.ops, clock_now, added)
            flat += (entry_id, o.reply_key, o.reply.decode(), o.dead_reason, raw_at, history_at,
                     len(ops))  # fmt: skip
            for op in ops:
                flat.append(len(op))
                flat += op
        # Raw (processor/redis_io.round_trip): redis-py's script call packed
        # a batch's ~150 arguments one by one in Python.
        command = ("EVALSHA", self._commit.sha, 3, self.stream, self.dead, self.history,
                   *self._commit_head, _packer.encode(flat), *blobs)  # fmt: skip
        [result] = await round_trip(self.redis, [command])
        if isinstance(result, NoScriptError):
            # Redis restarted or was flushed since the script was loaded;
            # nothing ran, so running it now is the first time.
            await self.redis.script_load(self._commit.script)
            [result] = await round_trip(self.redis, [command])
        if isinstance(result, ResponseError):
            raise result
        self._recent_adds.committed(added, clock_now)
        return cast(list[Any], result)

    async def group_stats(self) -> tuple[int | None, int | None]:
        """The group's lag and pending count (:func:`group_backlog`)."""
        return await group_backlog(self.redis, self.stream, self.group)

    async def remove_idle_consumers(self, idle_ms: int) -> list[bytes]:
        removed: list[bytes] = await self._gc(
            keys=[self.stream], args=[self.group, idle_ms, self.consumer]
        )
        return removed
