"""What the handlers of every OCPP version share: the registration policy,
distrusting charger clocks, and recording a charger's events in its history."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from processor import clock, history, keys
from processor.types import Context


async def unknown_under_known_only(ctx: Context) -> bool:
    """Whether the known-only registration policy is on and this charger is
    not on the allow-list (``ocpp:chargers:known``)."""
    return ctx.config.registration_policy == "known-only" and not (
        await ctx.state.is_known_charger(ctx.charge_point_id)
    )


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
    details: Mapping[str, object],
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


def latest_status(
    ctx: Context, action: str, prefix: str, status: str, request_id: int | None
) -> None:
    """The charger's latest status of one kind (firmware, log, ...) on its
    hash, newest-wins, plus an event."""
    fields = {f"{prefix}_status": status}
    if request_id is not None:
        fields[f"{prefix}_request_id"] = str(request_id)
    ctx.effects.hset_newer(
        keys.charge_point(ctx.charge_point_id),
        fields,
        timestamp_field=f"{prefix}_status_at",
        timestamp=clock.stored(ctx.received_at),
    )
    event(ctx, action, {"status": status, "request_id": "" if request_id is None else request_id})


def security_event(ctx: Context, kind: str, timestamp: datetime, tech_info: str | None) -> None:
    """A security event (both versions send the same three fields), at the
    time the charger says, unless its clock is too far ahead."""
    when = trusted_time(ctx, timestamp, "SecurityEventNotification")
    event(ctx, "SecurityEventNotification", {"type": kind, "tech_info": tech_info or ""}, when)
