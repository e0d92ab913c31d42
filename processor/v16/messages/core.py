"""The core profiles' operations a charger starts, request and confirmation."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from processor.v16.messages.common import (
    CiString20,
    CiString25,
    CiString50,
    CiString255,
    DateTime,
    IdTagInfo,
    IdToken,
    Omittable,
    Payload,
)
from processor.v16.messages.metering import MeterValue, TransactionMeterValue

RegistrationStatus = Literal["Accepted", "Pending", "Rejected"]
DataTransferStatus = Literal["Accepted", "Rejected", "UnknownMessageId", "UnknownVendorId"]
DiagnosticsStatus = Literal["Idle", "Uploaded", "UploadFailed", "Uploading"]
FirmwareStatus = Literal[
    "Downloaded",
    "DownloadFailed",
    "Downloading",
    "Idle",
    "InstallationFailed",
    "Installing",
    "Installed",
]
ChargePointErrorCode = Literal[
    "ConnectorLockFailure",
    "EVCommunicationError",
    "GroundFailure",
    "HighTemperature",
    "InternalError",
    "LocalListConflict",
    "NoError",
    "OtherError",
    "OverCurrentFailure",
    "PowerMeterFailure",
    "PowerSwitchFailure",
    "ReaderFailure",
    "ResetFailure",
    "UnderVoltage",
    "OverVoltage",
    "WeakSignal",
]
ChargePointStatus = Literal[
    "Available",
    "Preparing",
    "Charging",
    "SuspendedEVSE",
    "SuspendedEV",
    "Finishing",
    "Reserved",
    "Unavailable",
    "Faulted",
]
StopReason = Literal[
    "EmergencyStop",
    "EVDisconnected",
    "HardReset",
    "Local",
    "Other",
    "PowerLoss",
    "Reboot",
    "Remote",
    "SoftReset",
    "UnlockCommand",
    "DeAuthorized",
]


class Authorize(Payload):
    """Asks whether an id tag may charge."""

    id_tag: IdToken


class AuthorizeResponse(Payload):
    id_tag_info: IdTagInfo


class BootNotification(Payload):
    """Tells the central system the charger has (re)started, and what it is."""

    charge_point_vendor: CiString20
    charge_point_model: CiString20
    charge_point_serial_number: Omittable[CiString25] = None
    charge_box_serial_number: Omittable[CiString25] = None
    firmware_version: Omittable[CiString50] = None
    iccid: Omittable[CiString20] = None
    imsi: Omittable[CiString20] = None
    meter_type: Omittable[CiString25] = None
    meter_serial_number: Omittable[CiString25] = None


class BootNotificationResponse(Payload):
    status: RegistrationStatus
    current_time: DateTime
    interval: int


class DataTransfer(Payload):
    """Vendor-specific data; either side may send it."""

    vendor_id: CiString255
    message_id: Omittable[CiString50] = None
    data: Omittable[str] = None


class DataTransferResponse(Payload):
    status: DataTransferStatus
    data: Omittable[str] = None


class DiagnosticsStatusNotification(Payload):
    """Reports how the upload of a diagnostics file is going."""

    status: DiagnosticsStatus


class DiagnosticsStatusNotificationResponse(Payload):
    pass


class FirmwareStatusNotification(Payload):
    """Reports how a firmware update is going."""

    status: FirmwareStatus


class FirmwareStatusNotificationResponse(Payload):
    pass


class Heartbeat(Payload):
    """Tells the central system the charger is alive; asks for the time."""


class HeartbeatResponse(Payload):
    current_time: DateTime


class MeterValues(Payload):
    """Meter readings of a connector, in or out of a transaction."""

    connector_id: int
    meter_value: Annotated[list[MeterValue], msgspec.Meta(min_length=1)]
    transaction_id: Omittable[int] = None


class MeterValuesResponse(Payload):
    pass


class StartTransaction(Payload):
    """Tells the central system a transaction has started; asks for its id."""

    connector_id: int
    id_tag: IdToken
    meter_start: int
    timestamp: DateTime
    reservation_id: Omittable[int] = None


class StartTransactionResponse(Payload):
    id_tag_info: IdTagInfo
    transaction_id: int


class StatusNotification(Payload):
    """Reports a connector's status or error."""

    connector_id: int
    error_code: ChargePointErrorCode
    status: ChargePointStatus
    info: Omittable[CiString50] = None
    timestamp: Omittable[DateTime] = None
    vendor_id: Omittable[CiString255] = None
    vendor_error_code: Omittable[CiString50] = None


class StatusNotificationResponse(Payload):
    pass


class StopTransaction(Payload):
    """Tells the central system a transaction has stopped."""

    meter_stop: int
    timestamp: DateTime
    transaction_id: int
    id_tag: Omittable[IdToken] = None
    reason: Omittable[StopReason] = None
    transaction_data: Omittable[list[TransactionMeterValue]] = None


class StopTransactionResponse(Payload):
    id_tag_info: Omittable[IdTagInfo] = None


OPERATIONS: tuple[tuple[type[Payload], type[Payload]], ...] = (
    (Authorize, AuthorizeResponse),
    (BootNotification, BootNotificationResponse),
    (DataTransfer, DataTransferResponse),
    (DiagnosticsStatusNotification, DiagnosticsStatusNotificationResponse),
    (FirmwareStatusNotification, FirmwareStatusNotificationResponse),
    (Heartbeat, HeartbeatResponse),
    (MeterValues, MeterValuesResponse),
    (StartTransaction, StartTransactionResponse),
    (StatusNotification, StatusNotificationResponse),
    (StopTransaction, StopTransactionResponse),
)
