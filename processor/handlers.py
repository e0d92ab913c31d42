"""The central system's answers to charger-initiated CALLs: one plain async
function per action, collected in :data:`ROUTES`.

Handlers never touch Redis directly: they read through ``ctx.state`` and
record writes on ``ctx.effects``, which are committed atomically with the
reply, so they can be tested without a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic

import msgspec

from processor import keys
from processor.messages import (
    BootNotification,
    BootNotificationResponse,
    Heartbeat,
    HeartbeatResponse,
    IdTagInfo,
    StartTransaction,
    StartTransactionResponse,
    StopTransaction,
    StopTransactionResponse,
)
from processor.types import Context, Handler, Req, Resp


async def boot_notification(ctx: Context, req: BootNotification) -> BootNotificationResponse:
    fields = {k: v for k, v in msgspec.structs.asdict(req).items() if v is not None}
    fields["last_boot"] = ctx.now.isoformat()
    fields["last_seen"] = fields["last_boot"]
    ctx.effects.hset(keys.charge_point(ctx.charge_point_id), fields)
    return BootNotificationResponse(
        status="Accepted",
        current_time=ctx.now.replace(microsecond=0),
        interval=ctx.config.heartbeat_interval,
    )


async def heartbeat(ctx: Context, req: Heartbeat) -> HeartbeatResponse:
    ctx.effects.hset(keys.charge_point(ctx.charge_point_id), {"last_seen": ctx.now.isoformat()})
    return HeartbeatResponse(current_time=ctx.now.replace(microsecond=0))


async def start_transaction(ctx: Context, req: StartTransaction) -> StartTransactionResponse:
    # The id is keyed on the content, not the message id, so a charger that
    # retries under a new message id gets the transaction it already has.
    timestamp = req.timestamp.isoformat()
    key = keys.transaction_idempotency(
        ctx.charge_point_id, req.connector_id, req.id_tag, req.meter_start, timestamp
    )
    transaction_id = await ctx.state.transaction_id(key)
    record: dict[str, str | int] = {
        "charge_point_id": ctx.charge_point_id,
        "connector_id": req.connector_id,
        "id_tag": req.id_tag,
        "meter_start": req.meter_start,
        "start_timestamp": timestamp,
    }
    if req.reservation_id is not None:
        record["reservation_id"] = req.reservation_id
    ctx.effects.hset(keys.transaction(transaction_id), record)
    return StartTransactionResponse(
        id_tag_info=IdTagInfo(status="Accepted"), transaction_id=transaction_id
    )


async def stop_transaction(ctx: Context, req: StopTransaction) -> StopTransactionResponse:
    # Always accepted: refusing would make the charger retry a stop it has
    # already performed. One we never saw is kept as an anomaly instead.
    record: dict[str, str | int] = {
        "charge_point_id": ctx.charge_point_id,
        "meter_stop": req.meter_stop,
        "stop_timestamp": req.timestamp.isoformat(),
    }
    if req.reason is not None:
        record["stop_reason"] = req.reason
    if req.id_tag is not None:
        record["stop_id_tag"] = req.id_tag
    ctx.effects.hset_if(
        keys.transaction(req.transaction_id),
        record,
        fallback=keys.ANOMALIES,
        note="StopTransaction for an unknown transaction",
    )
    return StopTransactionResponse(
        id_tag_info=IdTagInfo(status="Accepted") if req.id_tag is not None else None
    )


@dataclass(frozen=True, slots=True)
class Route(Generic[Req, Resp]):
    """How to decode one action's payload and which handler answers it."""

    decoder: msgspec.json.Decoder[Req]
    handler: Handler[Req, Resp]
    # Whether the handler awaits ctx.state. Those that don't never suspend,
    # so the dispatcher runs them inline instead of paying for a task.
    reads_state: bool


def route(
    request: type[Req], handler: Handler[Req, Resp], *, reads_state: bool = False
) -> Route[Req, Resp]:
    return Route(msgspec.json.Decoder(request), handler, reads_state)


ROUTES: dict[str, Route[Any, Any]] = {
    "BootNotification": route(BootNotification, boot_notification),
    "Heartbeat": route(Heartbeat, heartbeat),
    "StartTransaction": route(StartTransaction, start_transaction, reads_state=True),
    "StopTransaction": route(StopTransaction, stop_transaction),
}
