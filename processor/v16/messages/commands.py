"""The core profiles' operations the central system starts, request and
confirmation. DataTransfer, which either side may start, is in ``core``.
"""

from __future__ import annotations

from typing import Literal

from processor.v16.messages.charging import (
    ChargingProfile,
    ChargingProfilePurpose,
    ChargingRateUnit,
    ChargingSchedule,
)
from processor.v16.messages.common import (
    CiString50,
    CiString255,
    CiString500,
    DateTime,
    IdTagInfo,
    IdToken,
    Omittable,
    Payload,
)

AcceptedRejected = Literal["Accepted", "Rejected"]
AvailabilityType = Literal["Inoperative", "Operative"]
AvailabilityStatus = Literal["Accepted", "Rejected", "Scheduled"]
ConfigurationStatus = Literal["Accepted", "Rejected", "RebootRequired", "NotSupported"]
ClearChargingProfileStatus = Literal["Accepted", "Unknown"]
ReservationStatus = Literal["Accepted", "Faulted", "Occupied", "Rejected", "Unavailable"]
ResetType = Literal["Hard", "Soft"]
UpdateType = Literal["Differential", "Full"]
UpdateStatus = Literal["Accepted", "Failed", "NotSupported", "VersionMismatch"]
ChargingProfileStatus = Literal["Accepted", "Rejected", "NotSupported"]
MessageTrigger = Literal[
    "BootNotification",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StatusNotification",
]
TriggerMessageStatus = Literal["Accepted", "Rejected", "NotImplemented"]
UnlockStatus = Literal["Unlocked", "UnlockFailed", "NotSupported"]


class KeyValue(Payload):
    """One configuration key as GetConfiguration reports it."""

    key: CiString50
    readonly: bool
    value: Omittable[CiString500] = None


class AuthorizationData(Payload):
    """One entry of a local authorization list."""

    id_tag: IdToken
    id_tag_info: Omittable[IdTagInfo] = None


class CancelReservation(Payload):
    """Cancels a reservation."""

    reservation_id: int


class CancelReservationResponse(Payload):
    status: AcceptedRejected


class ChangeAvailability(Payload):
    """Makes a connector, or the whole charger (connector 0), (in)operative."""

    connector_id: int
    type: AvailabilityType


class ChangeAvailabilityResponse(Payload):
    status: AvailabilityStatus


class ChangeConfiguration(Payload):
    """Sets one configuration key."""

    key: CiString50
    value: CiString500


class ChangeConfigurationResponse(Payload):
    status: ConfigurationStatus


class ClearCache(Payload):
    """Clears the charger's authorization cache."""


class ClearCacheResponse(Payload):
    status: AcceptedRejected


class ClearChargingProfile(Payload):
    """Clears the charging profiles that match every given criterion."""

    id: Omittable[int] = None
    connector_id: Omittable[int] = None
    charging_profile_purpose: Omittable[ChargingProfilePurpose] = None
    stack_level: Omittable[int] = None


class ClearChargingProfileResponse(Payload):
    status: ClearChargingProfileStatus


class GetCompositeSchedule(Payload):
    """Asks for the schedule a connector will follow over ``duration`` seconds."""

    connector_id: int
    duration: int
    charging_rate_unit: Omittable[ChargingRateUnit] = None


class GetCompositeScheduleResponse(Payload):
    status: AcceptedRejected
    connector_id: Omittable[int] = None
    schedule_start: Omittable[DateTime] = None
    charging_schedule: Omittable[ChargingSchedule] = None


class GetConfiguration(Payload):
    """Asks for the given configuration keys, or all of them."""

    key: Omittable[list[CiString50]] = None


class GetConfigurationResponse(Payload):
    configuration_key: Omittable[list[KeyValue]] = None
    unknown_key: Omittable[list[CiString50]] = None


class GetDiagnostics(Payload):
    """Asks the charger to upload a diagnostics file to ``location``."""

    # A URI by the schema ("format": "uri"); its syntax is left unchecked.
    location: str
    retries: Omittable[int] = None
    retry_interval: Omittable[int] = None
    start_time: Omittable[DateTime] = None
    stop_time: Omittable[DateTime] = None


class GetDiagnosticsResponse(Payload):
    file_name: Omittable[CiString255] = None


class GetLocalListVersion(Payload):
    """Asks for the version of the charger's local authorization list."""


class GetLocalListVersionResponse(Payload):
    list_version: int


class RemoteStartTransaction(Payload):
    """Asks the charger to start a transaction for an id tag."""

    id_tag: IdToken
    connector_id: Omittable[int] = None
    charging_profile: Omittable[ChargingProfile] = None


class RemoteStartTransactionResponse(Payload):
    status: AcceptedRejected


class RemoteStopTransaction(Payload):
    """Asks the charger to stop a transaction."""

    transaction_id: int


class RemoteStopTransactionResponse(Payload):
    status: AcceptedRejected


class ReserveNow(Payload):
    """Reserves a connector for an id tag until ``expiry_date``."""

    connector_id: int
    expiry_date: DateTime
    id_tag: IdToken
    reservation_id: int
    parent_id_tag: Omittable[IdToken] = None


class ReserveNowResponse(Payload):
    status: ReservationStatus


class Reset(Payload):
    """Asks the charger to reboot."""

    type: ResetType


class ResetResponse(Payload):
    status: AcceptedRejected


class SendLocalList(Payload):
    """Replaces or updates the charger's local authorization list."""

    list_version: int
    update_type: UpdateType
    local_authorization_list: Omittable[list[AuthorizationData]] = None


class SendLocalListResponse(Payload):
    status: UpdateStatus


class SetChargingProfile(Payload):
    """Installs a charging profile on a connector."""

    connector_id: int
    cs_charging_profiles: ChargingProfile


class SetChargingProfileResponse(Payload):
    status: ChargingProfileStatus


class TriggerMessage(Payload):
    """Asks the charger to send one of its messages now."""

    requested_message: MessageTrigger
    connector_id: Omittable[int] = None


class TriggerMessageResponse(Payload):
    status: TriggerMessageStatus


class UnlockConnector(Payload):
    """Asks the charger to unlock a connector."""

    connector_id: int


class UnlockConnectorResponse(Payload):
    status: UnlockStatus


class UpdateFirmware(Payload):
    """Asks the charger to fetch firmware from ``location`` and install it."""

    # A URI by the schema ("format": "uri"); its syntax is left unchecked.
    location: str
    retrieve_date: DateTime
    retries: Omittable[int] = None
    retry_interval: Omittable[int] = None


class UpdateFirmwareResponse(Payload):
    pass


OPERATIONS: tuple[tuple[type[Payload], type[Payload]], ...] = (
    (CancelReservation, CancelReservationResponse),
    (ChangeAvailability, ChangeAvailabilityResponse),
    (ChangeConfiguration, ChangeConfigurationResponse),
    (ClearCache, ClearCacheResponse),
    (ClearChargingProfile, ClearChargingProfileResponse),
    (GetCompositeSchedule, GetCompositeScheduleResponse),
    (GetConfiguration, GetConfigurationResponse),
    (GetDiagnostics, GetDiagnosticsResponse),
    (GetLocalListVersion, GetLocalListVersionResponse),
    (RemoteStartTransaction, RemoteStartTransactionResponse),
    (RemoteStopTransaction, RemoteStopTransactionResponse),
    (ReserveNow, ReserveNowResponse),
    (Reset, ResetResponse),
    (SendLocalList, SendLocalListResponse),
    (SetChargingProfile, SetChargingProfileResponse),
    (TriggerMessage, TriggerMessageResponse),
    (UnlockConnector, UnlockConnectorResponse),
    (UpdateFirmware, UpdateFirmwareResponse),
)
