"""Boot, liveness, authorization, connector status and vendor data."""

from __future__ import annotations

from typing import cast

import msgspec

from processor import clock, keys
from processor.handler_common import (
    event,
    heartbeat_time,
    refuse_unknown_under_known_only,
    register_boot,
    trusted_time,
)
from processor.protocol_names import OCPP16
from processor.types import Context
from processor.v16.handlers.common import id_tag_info
from processor.v16.messages import (
    Authorize,
    AuthorizeResponse,
    BootNotification,
    BootNotificationResponse,
    DataTransfer,
    DataTransferResponse,
    Heartbeat,
    HeartbeatResponse,
    StatusNotification,
    StatusNotificationResponse,
)
from processor.v16.messages.core import RegistrationStatus


async def boot_notification(ctx: Context, req: BootNotification) -> BootNotificationResponse:
    """Register or update the charger; accept it unless the known-only policy
    is on and it is not on the allow-list."""
    fields = {k: v for k, v in msgspec.structs.asdict(req).items() if isinstance(v, str)}
    fields["protocol"] = OCPP16
    status = cast(RegistrationStatus, await register_boot(ctx, fields))
    # Pending and Rejected carry the interval too: it is when to boot again.
    return BootNotificationResponse(
        status=status,
        current_time=ctx.now.replace(microsecond=0),
        interval=ctx.config.heartbeat_interval,
    )


async def heartbeat(ctx: Context, req: Heartbeat) -> HeartbeatResponse:
    return HeartbeatResponse(current_time=heartbeat_time(ctx))


async def authorize(ctx: Context, req: Authorize) -> AuthorizeResponse:
    """The idTag's status. Under known-only, a charger not on the allow-list
    is refused: it may not charge, nor learn which cards are valid."""
    await refuse_unknown_under_known_only(ctx)
    record, charging_in = await ctx.state.id_tag(req.id_tag)
    return AuthorizeResponse(id_tag_info=id_tag_info(ctx, record, charging_in))


async def status_notification(ctx: Context, req: StatusNotification) -> StatusNotificationResponse:
    """Keep the connector's status (connector 0: the charger itself); a
    notification older than the state we hold changes nothing."""
    when = trusted_time(ctx, req.timestamp or ctx.received_at, "StatusNotification")
    fields: dict[str, str] = {"status": req.status, "error_code": req.error_code}
    for name in ("info", "vendor_id", "vendor_error_code"):
        value = getattr(req, name)
        # Empty rather than absent, so a newer notification clears an older text.
        fields[name] = value if value is not None else ""
    ctx.effects.hset_newer(
        keys.connector(ctx.charge_point_id, req.connector_id),
        fields,
        timestamp_field="status_timestamp",
        timestamp=clock.stored(when),
    )
    ctx.effects.sadd(keys.connectors(ctx.charge_point_id), str(req.connector_id))
    event(ctx, "StatusNotification", fields, when, req.connector_id)
    return StatusNotificationResponse()


async def data_transfer(ctx: Context, req: DataTransfer) -> DataTransferResponse:
    """Hand the data to the vendor's handler; ``UnknownVendorId`` without one."""
    details = {
        "vendor_id": req.vendor_id,
        "message_id": req.message_id or "",
        "data": req.data or "",
    }
    event(ctx, "DataTransfer", details)
    handler = ctx.config.vendors.get(req.vendor_id)
    if handler is None:
        return DataTransferResponse(status="UnknownVendorId")
    return await handler(ctx, req)
