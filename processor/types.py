"""Type aliases, the Protocols a handler talks to, and its context."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import msgspec

if TYPE_CHECKING:
    from processor.commands import CommandRecord
    from processor.effects import Effects
    from processor.v16.messages import DataTransfer, DataTransferResponse


@dataclass(frozen=True, slots=True)
class IdTagRecord:
    """An idTag's entry in the authorization list."""

    status: str
    expiry_date: str | None = None
    parent_id_tag: str | None = None


@dataclass(frozen=True, slots=True)
class OpenedTransaction:
    transaction_id: int
    # Another transaction the idTag is already charging in, if any.
    concurrent_with: int | None
    id_tag: IdTagRecord | None


class State(Protocol):
    """The reads (and idempotent reservations) handlers need before they
    can answer; everything else they write goes through :class:`Effects`."""

    async def id_tag(self, tag: str) -> tuple[IdTagRecord | None, int | None]:
        """The tag's authorization entry and the transaction it is charging
        in, if any."""
        ...

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
        """Open the transaction once per idempotency key: the same id (and
        no new record) on every later call with the same key."""
        ...

    async def mark_seen(self, seen: Mapping[str, str]) -> None:
        """Write each charger's ``last_seen`` (charger -> stored time)."""
        ...

    async def watched_chargers(self, now_ms: int) -> set[str]:
        """The chargers whose frames are being recorded (processor/frames.py)."""
        ...

    async def transaction(self, transaction_id: int) -> dict[str, str] | None:
        """A transaction's record, or None if it is unknown."""
        ...

    async def transaction_v201(self, charge_point_id: str, transaction_id: str) -> dict[str, str]:
        """An OCPP 2.0.1 transaction's hot state; empty if none is held."""
        ...

    async def is_known_charger(self, charge_point_id: str) -> bool:
        """Whether the charger is on the allow-list (known-only policy)."""
        ...

    async def charger_protocol(self, charge_point_id: str) -> str | None:
        """The OCPP version the charger is registered with (its hash's
        ``protocol``: its boot's, or an operator's), if any."""
        ...

    async def command(self, command_id: str) -> CommandRecord | None:
        """A command we sent, looked up by its CALL's message id."""
        ...


RegistrationPolicy = Literal["accept-all", "known-only"]


@dataclass(frozen=True, slots=True)
class HandlerConfig:
    """Settings that change what handlers answer."""

    heartbeat_interval: int = 300
    registration_policy: RegistrationPolicy = "accept-all"
    # What a charger not on the allow-list is told under known-only.
    unknown_charger_status: Literal["Pending", "Rejected"] = "Pending"
    # What an idTag not in the authorization list is told.
    unknown_id_tag_status: Literal["Accepted", "Invalid"] = "Accepted"
    allow_concurrent_tx: bool = False
    # Timestamps further ahead of our clock than this are anomalies.
    max_clock_skew_s: int = 600
    # How long a closed transaction stays in Redis for late and
    # offline-queued messages; history keeps it for good.
    closed_transaction_ttl_s: int = 7 * 86400
    vendors: Mapping[str, DataTransferHandler] = field(default_factory=dict)
    # max_clock_skew_s, made a timedelta once rather than per reading.
    max_clock_skew: timedelta = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_clock_skew", timedelta(seconds=self.max_clock_skew_s))


@dataclass(slots=True)
class Context:
    """What a handler knows about the message it handles and may touch."""

    charge_point_id: str
    message_id: str
    # When this batch is handled: one clock reading for all its replies.
    now: datetime
    # When the ws-server received the frame (``now`` if it did not say).
    received_at: datetime
    config: HandlerConfig
    state: State
    effects: Effects


Req = TypeVar("Req", bound=msgspec.Struct)
Resp = TypeVar("Resp", bound=msgspec.Struct)
Handler = Callable[[Context, Req], Awaitable[Resp]]
DataTransferHandler = Callable[[Context, "DataTransfer"], Awaitable["DataTransferResponse"]]

# A readiness check: None when the service is ready, else why it is not.
Probe = Callable[[], Awaitable[str | None]]

# ASGI, as much of it as the health server needs (starlette/types.py).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
