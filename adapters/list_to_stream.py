"""The core adapter: the ws-server's list ``ocpp:requests`` into the stream
``ocpp:inbound``, losing and doubling nothing.

Each move is one Lua script (``adapters/lua/move.lua``): RPOP a batch and
XADD it, atomically, so a SIGKILL at any instant leaves every envelope either
in the list or in the stream, never both, never neither. Several adapters can
run at once; each script takes the oldest envelopes, so order is kept.

When the list is empty the adapter blocks in ``BLMOVE requests requests RIGHT
RIGHT``: a move of the last element onto itself, which changes nothing but
returns as soon as an envelope arrives. No polling, and no in-flight list to
recover after a crash, since the blocking command never takes anything.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio
from redis.asyncio import Redis

from processor import keys
from processor.lifecycle import Stopper
from processor.redis_io import TRANSIENT, Backoff, script

log = logging.getLogger(__name__)


class ListToStream:
    """Moves envelopes until :meth:`stop`; trims acknowledged entries."""

    def __init__(
        self,
        redis: Redis,
        *,
        batch: int = 512,
        trim_interval_ms: int = 1000,
        source: str = keys.REQUESTS,
        stream: str = keys.INBOUND,
    ) -> None:
        self._redis = redis
        self._batch = batch
        self._trim_interval = trim_interval_ms / 1000
        self._source = source
        self._stream = stream
        self._move_script = script(redis, "adapters", "move")
        self._trim_script = script(redis, "adapters", "trim")
        self._backoff = Backoff(log)
        self._stopper = Stopper()
        self.moved = 0
        self.trimmed = 0

    def stop(self) -> None:
        """Finish the move in progress, then return from :meth:`run`."""
        self._stopper.stop()

    async def run(self) -> None:
        next_trim = 0.0
        while not self._stopper.stopping:
            try:
                moved = await self.move_once()
                now = anyio.current_time()
                if now >= next_trim:
                    next_trim = now + self._trim_interval
                    await self.trim_once()
                if moved == 0:
                    await self._wait()
                self._backoff.ok()
            except TRANSIENT as exc:
                await self._backoff.wait(exc)

    async def move_once(self) -> int:
        """Move up to one batch; returns how many envelopes moved."""
        # Shielded so stop() never abandons a script whose result we need
        # to count; the script itself is atomic either way.
        with anyio.CancelScope(shield=True):
            moved = int(
                await self._move_script(
                    keys=[self._source, self._stream],
                    args=[self._batch, keys.ENVELOPE_FIELD],
                )
            )
        self.moved += moved
        return moved

    async def trim_once(self) -> int:
        """Drop entries every group has acknowledged; -1 if there is no group."""
        removed = int(await self._trim_script(keys=[self._stream]))
        if removed > 0:
            self.trimmed += removed
        return removed

    async def _wait(self) -> None:
        """Block until the list has an envelope, or the trim interval passes."""
        with self._stopper.interruptible():
            # redis-py types the timeout as int; Redis takes fractions of a second.
            timeout: Any = self._trim_interval
            await self._redis.blmove(self._source, self._source, timeout, "RIGHT", "RIGHT")
