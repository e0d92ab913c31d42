"""The CSMS's answers to what an OCPP 2.0.1 charging station sends: one
plain async function per action, collected in :data:`ROUTES`, over the same
pipeline, state and effects as 1.6's (``processor/v16/handlers``).

    core           boot, heartbeat, authorize, connector status, data transfer
    transactions   TransactionEvent: sessions that converge in any order
    reports        NotifyReport: the device model, in parts
    metering       meter values outside a transaction
    notifications  statuses, events, reports, limits and certificate requests
"""

from __future__ import annotations

from typing import Any

from processor.routes import Route, route
from processor.v201 import messages as m
from processor.v201.handlers import notifications as n
from processor.v201.handlers.core import (
    authorize,
    boot_notification,
    data_transfer,
    heartbeat,
    status_notification,
)
from processor.v201.handlers.metering import meter_values
from processor.v201.handlers.reports import notify_report
from processor.v201.handlers.transactions import (
    transaction_event,
    transaction_event_reads_state,
)

ROUTES: dict[str, Route[Any, Any]] = {
    "Authorize": route(m.Authorize, authorize, reads_state=True),
    "BootNotification": route(m.BootNotification, boot_notification, reads_state=True),
    "ClearedChargingLimit": route(m.ClearedChargingLimit, n.cleared_charging_limit),
    "DataTransfer": route(m.DataTransfer, data_transfer, reads_state=True),
    "FirmwareStatusNotification": route(
        m.FirmwareStatusNotification, n.firmware_status_notification
    ),
    "Get15118EVCertificate": route(m.Get15118EVCertificate, n.get_15118_ev_certificate),
    "GetCertificateStatus": route(m.GetCertificateStatus, n.get_certificate_status),
    "Heartbeat": route(m.Heartbeat, heartbeat),
    "LogStatusNotification": route(m.LogStatusNotification, n.log_status_notification),
    "MeterValues": route(m.MeterValues, meter_values),
    "NotifyChargingLimit": route(m.NotifyChargingLimit, n.notify_charging_limit),
    "NotifyCustomerInformation": route(m.NotifyCustomerInformation, n.notify_customer_information),
    "NotifyDisplayMessages": route(m.NotifyDisplayMessages, n.notify_display_messages),
    "NotifyEVChargingNeeds": route(m.NotifyEVChargingNeeds, n.notify_ev_charging_needs),
    "NotifyEVChargingSchedule": route(m.NotifyEVChargingSchedule, n.notify_ev_charging_schedule),
    "NotifyEvent": route(m.NotifyEvent, n.notify_event),
    "NotifyMonitoringReport": route(m.NotifyMonitoringReport, n.notify_monitoring_report),
    "NotifyReport": route(m.NotifyReport, notify_report),
    "PublishFirmwareStatusNotification": route(
        m.PublishFirmwareStatusNotification, n.publish_firmware_status_notification
    ),
    "ReportChargingProfiles": route(m.ReportChargingProfiles, n.report_charging_profiles),
    "ReservationStatusUpdate": route(m.ReservationStatusUpdate, n.reservation_status_update),
    "SecurityEventNotification": route(m.SecurityEventNotification, n.security_event_notification),
    "SignCertificate": route(m.SignCertificate, n.sign_certificate),
    "StatusNotification": route(m.StatusNotification, status_notification),
    "TransactionEvent": route(
        m.TransactionEvent, transaction_event, reads_state=transaction_event_reads_state
    ),  # fmt: skip
}
