"""The central system's answers to charger-initiated CALLs: one plain async
function per action, collected in :data:`ROUTES`.

Handlers never touch Redis directly: they read through ``ctx.state`` and
record writes on ``ctx.effects``, which are committed atomically with the
reply, so they can be tested without a server.

    core           boot, heartbeat, authorize, status, data transfer
    transactions   start, stop, meter values
    notifications  diagnostics, firmware, log, security, certificates
"""

from __future__ import annotations

from typing import Any

from processor.routes import Route, route
from processor.v16 import messages as m
from processor.v16.handlers.core import (
    authorize,
    boot_notification,
    data_transfer,
    heartbeat,
    status_notification,
)
from processor.v16.handlers.notifications import (
    diagnostics_status_notification,
    firmware_status_notification,
    log_status_notification,
    security_event_notification,
    sign_certificate,
    signed_firmware_status_notification,
)
from processor.v16.handlers.transactions import meter_values, start_transaction, stop_transaction

ROUTES: dict[str, Route[Any, Any]] = {
    "Authorize": route(m.Authorize, authorize, reads_state=True),
    "BootNotification": route(m.BootNotification, boot_notification, reads_state=True),
    "DataTransfer": route(m.DataTransfer, data_transfer, reads_state=True),
    "DiagnosticsStatusNotification": route(
        m.DiagnosticsStatusNotification, diagnostics_status_notification
    ),
    "FirmwareStatusNotification": route(m.FirmwareStatusNotification, firmware_status_notification),
    "Heartbeat": route(m.Heartbeat, heartbeat),
    "LogStatusNotification": route(m.LogStatusNotification, log_status_notification),
    "MeterValues": route(m.MeterValues, meter_values),
    "SecurityEventNotification": route(m.SecurityEventNotification, security_event_notification),
    "SignCertificate": route(m.SignCertificate, sign_certificate),
    "SignedFirmwareStatusNotification": route(
        m.SignedFirmwareStatusNotification, signed_firmware_status_notification
    ),
    "StartTransaction": route(m.StartTransaction, start_transaction, reads_state=True),
    "StatusNotification": route(m.StatusNotification, status_notification),
    "StopTransaction": route(m.StopTransaction, stop_transaction, reads_state=True),
}
