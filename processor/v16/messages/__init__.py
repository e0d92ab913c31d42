"""OCPP 1.6 payloads as msgspec Structs: for each of the 39 operations of the
core profiles and the security extension, the request (named after the
action) and its confirmation (``<Action>Response``), with the constraints of
the official JSON schemas: required fields, string lengths, enumerations,
integers, RFC 3339 date-times, array sizes and no unknown fields.

    common    the base Struct and the field types every module shares
    metering  meter readings (MeterValues, StopTransaction)
    charging  smart charging profiles
    core      operations of the core profiles a charger starts
    commands  operations of the core profiles the central system starts
    security  the security extension's operations
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from processor.v16.messages import commands, core, security
from processor.v16.messages.charging import (
    ChargingProfile,
    ChargingSchedule,
    ChargingSchedulePeriod,
)
from processor.v16.messages.commands import (
    AuthorizationData,
    CancelReservation,
    CancelReservationResponse,
    ChangeAvailability,
    ChangeAvailabilityResponse,
    ChangeConfiguration,
    ChangeConfigurationResponse,
    ClearCache,
    ClearCacheResponse,
    ClearChargingProfile,
    ClearChargingProfileResponse,
    GetCompositeSchedule,
    GetCompositeScheduleResponse,
    GetConfiguration,
    GetConfigurationResponse,
    GetDiagnostics,
    GetDiagnosticsResponse,
    GetLocalListVersion,
    GetLocalListVersionResponse,
    KeyValue,
    RemoteStartTransaction,
    RemoteStartTransactionResponse,
    RemoteStopTransaction,
    RemoteStopTransactionResponse,
    ReserveNow,
    ReserveNowResponse,
    Reset,
    ResetResponse,
    SendLocalList,
    SendLocalListResponse,
    SetChargingProfile,
    SetChargingProfileResponse,
    TriggerMessage,
    TriggerMessageResponse,
    UnlockConnector,
    UnlockConnectorResponse,
    UpdateFirmware,
    UpdateFirmwareResponse,
)
from processor.v16.messages.common import (
    IdTagInfo,
    Payload,
)
from processor.v16.messages.core import (
    Authorize,
    AuthorizeResponse,
    BootNotification,
    BootNotificationResponse,
    DataTransfer,
    DataTransferResponse,
    DiagnosticsStatusNotification,
    DiagnosticsStatusNotificationResponse,
    FirmwareStatusNotification,
    FirmwareStatusNotificationResponse,
    Heartbeat,
    HeartbeatResponse,
    MeterValues,
    MeterValuesResponse,
    StartTransaction,
    StartTransactionResponse,
    StatusNotification,
    StatusNotificationResponse,
    StopTransaction,
    StopTransactionResponse,
)
from processor.v16.messages.metering import (
    MeterValue,
    SampledValue,
    TransactionMeterValue,
    TransactionSampledValue,
)
from processor.v16.messages.security import (
    CertificateHashData,
    CertificateSigned,
    CertificateSignedResponse,
    DeleteCertificate,
    DeleteCertificateResponse,
    ExtendedTriggerMessage,
    ExtendedTriggerMessageResponse,
    Firmware,
    GetInstalledCertificateIds,
    GetInstalledCertificateIdsResponse,
    GetLog,
    GetLogResponse,
    InstallCertificate,
    InstallCertificateResponse,
    LogParameters,
    LogStatusNotification,
    LogStatusNotificationResponse,
    SecurityEventNotification,
    SecurityEventNotificationResponse,
    SignCertificate,
    SignCertificateResponse,
    SignedFirmwareStatusNotification,
    SignedFirmwareStatusNotificationResponse,
    SignedUpdateFirmware,
    SignedUpdateFirmwareResponse,
)

_OPERATIONS = (
    *core.OPERATIONS,
    *commands.OPERATIONS,
    *security.CHARGER_OPERATIONS,
    *security.CENTRAL_OPERATIONS,
)
# Each request Struct is named after its action.
REQUESTS: dict[str, type[msgspec.Struct]] = {req.__name__: req for req, _ in _OPERATIONS}
RESPONSES: dict[str, type[msgspec.Struct]] = {req.__name__: resp for req, resp in _OPERATIONS}


def _actions(operations: Iterable[tuple[type[Payload], type[Payload]]]) -> frozenset[str]:
    return frozenset(req.__name__ for req, _ in operations)


CHARGER_INITIATED = _actions((*core.OPERATIONS, *security.CHARGER_OPERATIONS))
# DataTransfer is either side's to send.
CENTRAL_INITIATED = frozenset({"DataTransfer"}) | _actions(
    (*commands.OPERATIONS, *security.CENTRAL_OPERATIONS)
)

__all__ = [
    "CENTRAL_INITIATED",
    "CHARGER_INITIATED",
    "REQUESTS",
    "RESPONSES",
    "AuthorizationData",
    "Authorize",
    "AuthorizeResponse",
    "BootNotification",
    "BootNotificationResponse",
    "CancelReservation",
    "CancelReservationResponse",
    "CertificateHashData",
    "CertificateSigned",
    "CertificateSignedResponse",
    "ChangeAvailability",
    "ChangeAvailabilityResponse",
    "ChangeConfiguration",
    "ChangeConfigurationResponse",
    "ChargingProfile",
    "ChargingSchedule",
    "ChargingSchedulePeriod",
    "ClearCache",
    "ClearCacheResponse",
    "ClearChargingProfile",
    "ClearChargingProfileResponse",
    "DataTransfer",
    "DataTransferResponse",
    "DeleteCertificate",
    "DeleteCertificateResponse",
    "DiagnosticsStatusNotification",
    "DiagnosticsStatusNotificationResponse",
    "ExtendedTriggerMessage",
    "ExtendedTriggerMessageResponse",
    "Firmware",
    "FirmwareStatusNotification",
    "FirmwareStatusNotificationResponse",
    "GetCompositeSchedule",
    "GetCompositeScheduleResponse",
    "GetConfiguration",
    "GetConfigurationResponse",
    "GetDiagnostics",
    "GetDiagnosticsResponse",
    "GetInstalledCertificateIds",
    "GetInstalledCertificateIdsResponse",
    "GetLocalListVersion",
    "GetLocalListVersionResponse",
    "GetLog",
    "GetLogResponse",
    "Heartbeat",
    "HeartbeatResponse",
    "IdTagInfo",
    "InstallCertificate",
    "InstallCertificateResponse",
    "KeyValue",
    "LogParameters",
    "LogStatusNotification",
    "LogStatusNotificationResponse",
    "MeterValue",
    "MeterValues",
    "MeterValuesResponse",
    "Payload",
    "RemoteStartTransaction",
    "RemoteStartTransactionResponse",
    "RemoteStopTransaction",
    "RemoteStopTransactionResponse",
    "ReserveNow",
    "ReserveNowResponse",
    "Reset",
    "ResetResponse",
    "SampledValue",
    "SecurityEventNotification",
    "SecurityEventNotificationResponse",
    "SendLocalList",
    "SendLocalListResponse",
    "SetChargingProfile",
    "SetChargingProfileResponse",
    "SignCertificate",
    "SignCertificateResponse",
    "SignedFirmwareStatusNotification",
    "SignedFirmwareStatusNotificationResponse",
    "SignedUpdateFirmware",
    "SignedUpdateFirmwareResponse",
    "StartTransaction",
    "StartTransactionResponse",
    "StatusNotification",
    "StatusNotificationResponse",
    "StopTransaction",
    "StopTransactionResponse",
    "TransactionMeterValue",
    "TransactionSampledValue",
    "TriggerMessage",
    "TriggerMessageResponse",
    "UnlockConnector",
    "UnlockConnectorResponse",
    "UpdateFirmware",
    "UpdateFirmwareResponse",
]
