"""What the handlers of every OCPP version share: the registration policy,
distrusting charger clocks, and recording a charger's events in its history."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime

from processor import clock, history, keys
from processor.errors import SecurityViolation
from processor.types import Context, IdTagRecord


async def unknown_under_known_only(ctx: Context) -> bool:
    """Whether the known-only registration policy is on and this charger is
    not on the allow-list (``ocpp:chargers:known``)."""
    return ctx.config.registration_policy == "known-only" and not (
        await ctx.state.is_known_charger(ctx.charge_point_id)
    )


async def refuse_unknown_under_known_only(ctx: Context) -> None:
    """Raise SecurityError if the known-only policy is on and this charger
    is not on the allow-list: it may not charge, nor learn which cards are
    valid."""
    if await unknown_under_known_only(ctx):
        raise SecurityViolation(
            f"{ctx.charge_point_id} is not on the allow-list (ocpp:chargers:known); "
            "registration policy known-only"
        )


async def register_boot(ctx: Context, fields: dict[str, str]) -> str:
    """Record a boot (``fields``: what the charger said of itself) on the
    charger's hash, in the set of chargers and in its history; returns the
    registration status to answer, Accepted unless the known-only policy
    is on and the charger is not on the allow-list."""
    status = "Accepted"
    if await unknown_under_known_only(ctx):
        status = ctx.config.unknown_charger_status
    fields["registration_status"] = status
    fields["last_boot"] = fields["last_seen"] = clock.stored(ctx.now)
    ctx.effects.hset(keys.charge_point(ctx.charge_point_id), fields)
    ctx.effects.sadd(keys.CHARGE_POINTS, ctx.charge_point_id)
    event(ctx, "BootNotification", {k: v for k, v in fields.items() if k != "last_seen"}, ctx.now)
    return status


def heartbeat_time(ctx: Context) -> datetime:
    """Note the charger was seen; the time to answer a Heartbeat with."""
    ctx.effects.hset(keys.charge_point(ctx.charge_point_id), {"last_seen": clock.stored(ctx.now)})
    return ctx.now.replace(microsecond=0)


def list_status(
    ctx: Context,
    record: IdTagRecord | None,
    charging_in: int | None,
    statuses: Collection[str],
    this_transaction: int = 0,
) -> tuple[str, datetime | None]:
    """What the authorization list says of a card, in both versions:
    (status, expiry). Its entry's status (one ``statuses`` does not hold
    refuses it: an entry an operator wrote by hand may hold anything),
    Expired if past its expiry date, ConcurrentTx if it is charging in
    another transaction (unless allowed); the configured status if it is
    not on the list."""
    if record is None:
        status: str = ctx.config.unknown_id_tag_status
        expiry = None
    else:
        status = record.status if record.status in statuses else "Invalid"
        expiry = clock.parse(record.expiry_date)
    if status == "Accepted" and expiry is not None and expiry <= ctx.now:
        status = "Expired"
    concurrent = charging_in is not None and charging_in != this_transaction
    if status == "Accepted" and concurrent and not ctx.config.allow_concurrent_tx:
        status = "ConcurrentTx"
    return status, expiry


# The latest-values field of each measurand, phase and location seen. All
# three are enums (decoding refuses other values): a few hundred at most.
LATEST_NAMES: dict[tuple[str | None, str | None, str | None], str] = {}


def latest_name(where: tuple[str | None, str | None, str | None]) -> str:
    """``<measurand>[:<phase>][@<location>]``, the measurand defaulting as
    OCPP's does: one hot-state layout for both versions. Hot loops look in
    LATEST_NAMES first."""
    measurand, phase, location = where
    name = (
        (measurand or "Energy.Active.Import.Register")
        + (f":{phase}" if phase else "")
        + (f"@{location}" if location else "")
    )
    LATEST_NAMES[where] = name
    return name


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
