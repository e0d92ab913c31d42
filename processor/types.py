"""Type aliases and the Protocols a handler talks to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

import msgspec

if TYPE_CHECKING:
    from processor.effects import Effects


class State(Protocol):
    """The reads (and idempotent reservations) handlers need before they
    can answer; everything else they write goes through :class:`Effects`."""

    async def transaction_id(self, idempotency_key: str) -> int:
        """The transactionId for this StartTransaction content: allocated on
        first use, the same one on every later call with the same key."""
        ...


@dataclass(frozen=True, slots=True)
class HandlerConfig:
    """Settings that change what handlers answer."""

    heartbeat_interval: int = 300


@dataclass(slots=True)
class Context:
    """What a handler knows about the message it handles and may touch."""

    charge_point_id: str
    message_id: str
    # When this batch is handled: one clock reading for all its replies.
    now: datetime
    config: HandlerConfig
    state: State
    effects: Effects


Req = TypeVar("Req", bound=msgspec.Struct)
Resp = TypeVar("Resp", bound=msgspec.Struct)
Handler = Callable[[Context, Req], Awaitable[Resp]]
