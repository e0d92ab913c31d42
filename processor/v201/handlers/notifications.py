"""What a 2.0.1 station reports that needs recording and a plain answer:
firmware, log and publish-firmware statuses, security events, monitoring
events and reports, charging limits and needs, display messages, customer
information, reservation updates; and the certificate requests that need a
PKI or an external party, answered as the spec says when none is configured."""

from __future__ import annotations

import msgspec

from processor import clock, keys
from processor.handler_common import event, latest_status, security_event, trusted_time
from processor.types import Context
from processor.v201.messages import (
    ClearedChargingLimit,
    ClearedChargingLimitResponse,
    FirmwareStatusNotification,
    FirmwareStatusNotificationResponse,
    Get15118EVCertificate,
    Get15118EVCertificateResponse,
    GetCertificateStatus,
    GetCertificateStatusResponse,
    LogStatusNotification,
    LogStatusNotificationResponse,
    NotifyChargingLimit,
    NotifyChargingLimitResponse,
    NotifyCustomerInformation,
    NotifyCustomerInformationResponse,
    NotifyDisplayMessages,
    NotifyDisplayMessagesResponse,
    NotifyEVChargingNeeds,
    NotifyEVChargingNeedsResponse,
    NotifyEVChargingSchedule,
    NotifyEVChargingScheduleResponse,
    NotifyEvent,
    NotifyEventResponse,
    NotifyMonitoringReport,
    NotifyMonitoringReportResponse,
    PublishFirmwareStatusNotification,
    PublishFirmwareStatusNotificationResponse,
    ReportChargingProfiles,
    ReportChargingProfilesResponse,
    ReservationStatusUpdate,
    ReservationStatusUpdateResponse,
    SecurityEventNotification,
    SecurityEventNotificationResponse,
    SignCertificate,
    SignCertificateResponse,
    StatusInfoType,
)

_json = msgspec.json.Encoder()


def _text(value: object) -> str:
    """A part of a message as the JSON the station sent it in (camelCase)."""
    return _json.encode(value).decode()


async def firmware_status_notification(
    ctx: Context, req: FirmwareStatusNotification
) -> FirmwareStatusNotificationResponse:
    latest_status(ctx, "FirmwareStatusNotification", "firmware", req.status, req.request_id)
    return FirmwareStatusNotificationResponse()


async def log_status_notification(
    ctx: Context, req: LogStatusNotification
) -> LogStatusNotificationResponse:
    latest_status(ctx, "LogStatusNotification", "log", req.status, req.request_id)
    return LogStatusNotificationResponse()


async def publish_firmware_status_notification(
    ctx: Context, req: PublishFirmwareStatusNotification
) -> PublishFirmwareStatusNotificationResponse:
    latest_status(ctx, "PublishFirmwareStatusNotification", "publish_firmware", req.status,
                  req.request_id)  # fmt: skip
    return PublishFirmwareStatusNotificationResponse()


async def security_event_notification(
    ctx: Context, req: SecurityEventNotification
) -> SecurityEventNotificationResponse:
    security_event(ctx, req.type, req.timestamp, req.tech_info)
    return SecurityEventNotificationResponse()


async def sign_certificate(ctx: Context, req: SignCertificate) -> SignCertificateResponse:
    """Keep the CSR for the operator's CA; the signed chain goes back with a
    CertificateSigned command. Accepted: the CSR is taken in for processing."""
    ctx.effects.hset(
        keys.charge_point(ctx.charge_point_id),
        {"csr": req.csr, "csr_type": req.certificate_type or "",
         "csr_received_at": clock.stored(ctx.received_at)},
    )  # fmt: skip
    event(ctx, "SignCertificate", {"csr": req.csr, "certificate_type": req.certificate_type or ""})
    return SignCertificateResponse(status="Accepted")


async def notify_event(ctx: Context, req: NotifyEvent) -> NotifyEventResponse:
    """Each monitoring event to history as the station sent it, at the time
    it says it happened."""
    for data in req.event_data:
        when = trusted_time(ctx, data.timestamp, "NotifyEvent")
        details = {"event_id": data.event_id, "trigger": data.trigger,
                   "component": data.component.name, "variable": data.variable.name,
                   "actual_value": data.actual_value, "seq_no": req.seq_no,
                   "event_data": _text(data)}  # fmt: skip
        event(ctx, "NotifyEvent", details, when)
    return NotifyEventResponse()


async def notify_monitoring_report(
    ctx: Context, req: NotifyMonitoringReport
) -> NotifyMonitoringReportResponse:
    details = {"request_id": req.request_id, "seq_no": req.seq_no, "tbc": str(req.tbc).lower(),
               "monitor": _text(req.monitor or [])}  # fmt: skip
    event(ctx, "NotifyMonitoringReport", details, trusted_time(ctx, req.generated_at, "report"))
    return NotifyMonitoringReportResponse()


async def notify_customer_information(
    ctx: Context, req: NotifyCustomerInformation
) -> NotifyCustomerInformationResponse:
    details = {"request_id": req.request_id, "seq_no": req.seq_no, "tbc": str(req.tbc).lower(),
               "data": req.data}  # fmt: skip
    event(ctx, "NotifyCustomerInformation", details,
          trusted_time(ctx, req.generated_at, "customer information"))  # fmt: skip
    return NotifyCustomerInformationResponse()


async def notify_display_messages(
    ctx: Context, req: NotifyDisplayMessages
) -> NotifyDisplayMessagesResponse:
    details = {"request_id": req.request_id, "tbc": str(req.tbc).lower(),
               "message_info": _text(req.message_info or [])}  # fmt: skip
    event(ctx, "NotifyDisplayMessages", details)
    return NotifyDisplayMessagesResponse()


async def reservation_status_update(
    ctx: Context, req: ReservationStatusUpdate
) -> ReservationStatusUpdateResponse:
    details = {
        "reservation_id": req.reservation_id,
        "status": req.reservation_update_status,
    }
    event(ctx, "ReservationStatusUpdate", details)
    return ReservationStatusUpdateResponse()


async def notify_charging_limit(
    ctx: Context, req: NotifyChargingLimit
) -> NotifyChargingLimitResponse:
    details = {"source": req.charging_limit.charging_limit_source,
               "grid_critical": str(bool(req.charging_limit.is_grid_critical)).lower(),
               "evse_id": "" if req.evse_id is None else req.evse_id,
               "charging_schedule": _text(req.charging_schedule or [])}  # fmt: skip
    event(ctx, "NotifyChargingLimit", details)
    return NotifyChargingLimitResponse()


async def cleared_charging_limit(
    ctx: Context, req: ClearedChargingLimit
) -> ClearedChargingLimitResponse:
    details = {"source": req.charging_limit_source,
               "evse_id": "" if req.evse_id is None else req.evse_id}  # fmt: skip
    event(ctx, "ClearedChargingLimit", details)
    return ClearedChargingLimitResponse()


async def notify_ev_charging_needs(
    ctx: Context, req: NotifyEVChargingNeeds
) -> NotifyEVChargingNeedsResponse:
    """Recorded. Rejected: no smart-charging engine here will send the
    schedule that Accepted promises (K15)."""
    details = {
        "evse_id": req.evse_id,
        "charging_needs": _text(req.charging_needs),
    }
    event(ctx, "NotifyEVChargingNeeds", details)
    return NotifyEVChargingNeedsResponse(
        status="Rejected",
        status_info=StatusInfoType(reason_code="NoSchedule",
                                   additional_info="no smart charging configured"),
    )  # fmt: skip


async def notify_ev_charging_schedule(
    ctx: Context, req: NotifyEVChargingSchedule
) -> NotifyEVChargingScheduleResponse:
    details = {"evse_id": req.evse_id, "time_base": clock.stored(req.time_base),
               "charging_schedule": _text(req.charging_schedule)}  # fmt: skip
    event(ctx, "NotifyEVChargingSchedule", details)
    return NotifyEVChargingScheduleResponse(status="Accepted")


async def report_charging_profiles(
    ctx: Context, req: ReportChargingProfiles
) -> ReportChargingProfilesResponse:
    details = {"request_id": req.request_id, "source": req.charging_limit_source,
               "evse_id": req.evse_id, "tbc": str(req.tbc).lower(),
               "charging_profile": _text(req.charging_profile)}  # fmt: skip
    event(ctx, "ReportChargingProfiles", details)
    return ReportChargingProfilesResponse()


async def get_15118_ev_certificate(
    ctx: Context, req: Get15118EVCertificate
) -> Get15118EVCertificateResponse:
    """Failed: installing an EV contract certificate needs a contract
    certificate pool (a Mobility Operator's) that none is configured here."""
    details = {"action": req.action, "schema_version": req.iso15118_schema_version}
    event(ctx, "Get15118EVCertificate", details)
    return Get15118EVCertificateResponse(
        status="Failed", exi_response="",
        status_info=StatusInfoType(reason_code="NoCertPool",
                                   additional_info="no contract certificate pool configured"),
    )  # fmt: skip


async def get_certificate_status(
    ctx: Context, req: GetCertificateStatus
) -> GetCertificateStatusResponse:
    """Failed: no OCSP responder is configured to ask."""
    ocsp = req.ocsp_request_data
    event(ctx, "GetCertificateStatus", {"serial_number": ocsp.serial_number,
                                        "responder_url": ocsp.responder_url})  # fmt: skip
    return GetCertificateStatusResponse(
        status="Failed",
        status_info=StatusInfoType(reason_code="NoOCSP", additional_info="no OCSP responder"),
    )
