"""What several handlers share: answering for an idTag, and distrusting
charger clocks."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import cast, get_args

from processor import clock, history
from processor.types import Context, IdTagRecord
from processor.v16.messages import IdTagInfo
from processor.v16.messages.common import AuthorizationStatus

_STATUSES = frozenset(get_args(AuthorizationStatus))


async def unknown_under_known_only(ctx: Context) -> bool:
    """Whether the known-only registration policy is on and this charger is
    not on the allow-list (``ocpp:chargers:known``)."""
    return ctx.config.registration_policy == "known-only" and not (
        await ctx.state.is_known_charger(ctx.charge_point_id)
    )


def id_tag_info(
    ctx: Context, record: IdTagRecord | None, charging_in: int | None, this_transaction: int = 0
) -> IdTagInfo:
    """The answer for an idTag: its list entry, expired if past its expiry
    date, ConcurrentTx if it is charging in another transaction (unless
    allowed); the configured status if it is not on the list."""
    concurrent = charging_in is not None and charging_in != this_transaction
    if record is None:
        status: AuthorizationStatus = ctx.config.unknown_id_tag_status
        expiry, parent = None, None
    else:
        # An entry an operator wrote by hand may hold anything: a status we
        # do not know refuses the tag, a parent too long for the schema is
        # left out rather than sent.
        status = cast(
            AuthorizationStatus, record.status if record.status in _STATUSES else "Invalid"
        )
        expiry = clock.parse(record.expiry_date)
        parent = record.parent_id_tag if 0 < len(record.parent_id_tag or "") <= 20 else None
    if status == "Accepted" and expiry is not None and expiry <= ctx.now:
        status = "Expired"
    if status == "Accepted" and concurrent and not ctx.config.allow_concurrent_tx:
        status = "ConcurrentTx"
    return IdTagInfo(status=status, expiry_date=expiry, parent_id_tag=parent)


def trusted_time(ctx: Context, timestamp: datetime, what: str) -> datetime:
    """``timestamp``, unless it lies further in the future than the allowed
    clock skew: then an anomaly is recorded and the receipt time is used, so
    a charger with a broken clock cannot pin state to a far future."""
    if clock.utc(timestamp) - ctx.now > ctx.config.max_clock_skew:
        ctx.effects.anomaly(ctx.charge_point_id, "timestamp in the future", clock.stored(ctx.now),
                            message_id=ctx.message_id, what=what,
                            timestamp=clock.stored(timestamp))  # fmt: skip
        return ctx.received_at
    return timestamp


def event(
    ctx: Context,
    kind: str,
    details: Mapping[str, str | int],
    occurred_at: datetime | None = None,
    connector_id: int | None = None,
) -> None:
    """Record a boot, status change, notification or security event in the
    charger's history (``occurred_at``: when it said, else when received)."""
    ctx.effects.record(
        history.ChargerEvent(
            ctx.charge_point_id,
            kind,
            clock.stored(occurred_at or ctx.received_at),
            connector_id,
            {name: str(value) for name, value in details.items()},
        )
    )
