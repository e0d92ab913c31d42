"""Boot, liveness, authorization and connector status, OCPP 2.0.1."""

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
from processor.protocol_names import OCPP201
from processor.types import Context
from processor.v16 import messages as v16
from processor.v201.handlers.common import id_token_info
from processor.v201.messages import (
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
from processor.v201.messages.enums import RegistrationStatusEnumType

_json = msgspec.json.Encoder()


async def boot_notification(ctx: Context, req: BootNotification) -> BootNotificationResponse:
    """Register or update the charging station, under the field names 1.6's
    boot uses for the same facts (the API shows either alike); accept it
    unless the known-only policy is on and it is not on the allow-list."""
    station = req.charging_station
    facts = {
        "charge_point_vendor": station.vendor_name,
        "charge_point_model": station.model,
        "charge_point_serial_number": station.serial_number,
        "firmware_version": station.firmware_version,
        "iccid": station.modem.iccid if station.modem else None,
        "imsi": station.modem.imsi if station.modem else None,
    }
    fields = {k: v for k, v in facts.items() if v is not None}
    fields |= {"boot_reason": req.reason, "protocol": OCPP201}
    status = cast(RegistrationStatusEnumType, await register_boot(ctx, fields))
    # Pending and Rejected carry the interval too: it is when to boot again.
    return BootNotificationResponse(
        current_time=ctx.now.replace(microsecond=0),
        interval=ctx.config.heartbeat_interval,
        status=status,
    )


async def heartbeat(ctx: Context, req: Heartbeat) -> HeartbeatResponse:
    return HeartbeatResponse(current_time=heartbeat_time(ctx))


async def authorize(ctx: Context, req: Authorize) -> AuthorizeResponse:
    """The idToken's status, from the authorization list 1.6's idTags share.
    Under known-only, a station not on the allow-list is refused: it may
    not charge, nor learn which tokens are valid."""
    await refuse_unknown_under_known_only(ctx)
    record, charging_in = await ctx.state.id_tag(req.id_token.id_token)
    return AuthorizeResponse(id_token_info=id_token_info(ctx, req.id_token, record, charging_in))


async def status_notification(ctx: Context, req: StatusNotification) -> StatusNotificationResponse:
    """Keep the status of one connector of one EVSE; a notification older
    than the state we hold changes nothing."""
    when = trusted_time(ctx, req.timestamp, "StatusNotification")
    ctx.effects.hset_newer(
        keys.evse_connector(ctx.charge_point_id, req.evse_id, req.connector_id),
        {"status": req.connector_status},
        timestamp_field="status_timestamp",
        timestamp=clock.stored(when),
    )
    ctx.effects.sadd(keys.evse_connectors(ctx.charge_point_id), f"{req.evse_id}/{req.connector_id}")
    details = {"status": req.connector_status, "evse_id": req.evse_id}
    event(ctx, "StatusNotification", details, when, req.connector_id)
    return StatusNotificationResponse()


async def data_transfer(ctx: Context, req: DataTransfer) -> DataTransferResponse:
    """Hand the data to the vendor's handler, the same hooks as 1.6's
    (``OCPP_DATA_TRANSFER_HANDLERS``): they take 1.6's DataTransfer, whose
    ``data`` is text, so 2.0.1's JSON value reaches them as its JSON text
    unless it is a string. ``UnknownVendorId`` without one."""
    if req.data is msgspec.UNSET or req.data is None:
        data = None
    else:
        data = req.data if isinstance(req.data, str) else _json.encode(req.data).decode()
    event(ctx, "DataTransfer", {"vendor_id": req.vendor_id, "message_id": req.message_id or "",
                                "data": data or ""})  # fmt: skip
    handler = ctx.config.vendors.get(req.vendor_id)
    if handler is None:
        return DataTransferResponse(status="UnknownVendorId")
    answer = await handler(
        ctx, v16.DataTransfer(vendor_id=req.vendor_id, message_id=req.message_id, data=data)
    )
    if answer.data is None:
        return DataTransferResponse(status=answer.status)
    return DataTransferResponse(status=answer.status, data=answer.data)
