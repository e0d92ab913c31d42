"""Status reports that need nothing but recording: diagnostics, firmware and
log uploads, security events, and certificate signing requests."""

from __future__ import annotations

from processor import clock, keys
from processor.handler_common import event, latest_status, security_event
from processor.types import Context
from processor.v16.messages import (
    DiagnosticsStatusNotification,
    DiagnosticsStatusNotificationResponse,
    FirmwareStatusNotification,
    FirmwareStatusNotificationResponse,
    LogStatusNotification,
    LogStatusNotificationResponse,
    SecurityEventNotification,
    SecurityEventNotificationResponse,
    SignCertificate,
    SignCertificateResponse,
    SignedFirmwareStatusNotification,
    SignedFirmwareStatusNotificationResponse,
)


async def diagnostics_status_notification(
    ctx: Context, req: DiagnosticsStatusNotification
) -> DiagnosticsStatusNotificationResponse:
    latest_status(ctx, "DiagnosticsStatusNotification", "diagnostics", req.status, None)
    return DiagnosticsStatusNotificationResponse()


async def firmware_status_notification(
    ctx: Context, req: FirmwareStatusNotification
) -> FirmwareStatusNotificationResponse:
    latest_status(ctx, "FirmwareStatusNotification", "firmware", req.status, None)
    return FirmwareStatusNotificationResponse()


async def signed_firmware_status_notification(
    ctx: Context, req: SignedFirmwareStatusNotification
) -> SignedFirmwareStatusNotificationResponse:
    latest_status(
        ctx, "SignedFirmwareStatusNotification", "signed_firmware", req.status, req.request_id
    )
    return SignedFirmwareStatusNotificationResponse()


async def log_status_notification(
    ctx: Context, req: LogStatusNotification
) -> LogStatusNotificationResponse:
    latest_status(ctx, "LogStatusNotification", "log", req.status, req.request_id)
    return LogStatusNotificationResponse()


async def security_event_notification(
    ctx: Context, req: SecurityEventNotification
) -> SecurityEventNotificationResponse:
    security_event(ctx, req.type, req.timestamp, req.tech_info)
    return SecurityEventNotificationResponse()


async def sign_certificate(ctx: Context, req: SignCertificate) -> SignCertificateResponse:
    """Keep the CSR for the operator's CA; the signed chain goes back with a
    CertificateSigned command. Accepted, as the spec asks when the CSR is
    taken in for processing."""
    ctx.effects.hset(
        keys.charge_point(ctx.charge_point_id),
        {"csr": req.csr, "csr_received_at": clock.stored(ctx.received_at)},
    )
    event(ctx, "SignCertificate", {"csr": req.csr})
    return SignCertificateResponse(status="Accepted")
