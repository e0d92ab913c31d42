"""The security extension's operations (OCPP 1.6 Security Whitepaper),
request and confirmation: certificates, signed firmware, logs and security
events.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from processor.v16.messages.common import DateTime, Omittable, Payload

String40 = Annotated[str, msgspec.Meta(max_length=40)]
String50 = Annotated[str, msgspec.Meta(max_length=50)]
String128 = Annotated[str, msgspec.Meta(max_length=128)]
String255 = Annotated[str, msgspec.Meta(max_length=255)]
String512 = Annotated[str, msgspec.Meta(max_length=512)]
String800 = Annotated[str, msgspec.Meta(max_length=800)]
String5500 = Annotated[str, msgspec.Meta(max_length=5500)]
String10000 = Annotated[str, msgspec.Meta(max_length=10000)]

GenericStatus = Literal["Accepted", "Rejected"]
CertificateUse = Literal["CentralSystemRootCertificate", "ManufacturerRootCertificate"]
HashAlgorithm = Literal["SHA256", "SHA384", "SHA512"]
DeleteCertificateStatus = Literal["Accepted", "Failed", "NotFound"]
ExtendedMessageTrigger = Literal[
    "BootNotification",
    "LogStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "SignChargePointCertificate",
    "StatusNotification",
]
TriggerMessageStatus = Literal["Accepted", "Rejected", "NotImplemented"]
GetInstalledCertificateStatus = Literal["Accepted", "NotFound"]
LogType = Literal["DiagnosticsLog", "SecurityLog"]
LogStatus = Literal["Accepted", "Rejected", "AcceptedCanceled"]
InstallCertificateStatus = Literal["Accepted", "Failed", "Rejected"]
UploadLogStatus = Literal[
    "BadMessage",
    "Idle",
    "NotSupportedOperation",
    "PermissionDenied",
    "Uploaded",
    "UploadFailure",
    "Uploading",
]
SignedFirmwareStatus = Literal[
    "Downloaded",
    "DownloadFailed",
    "Downloading",
    "DownloadScheduled",
    "DownloadPaused",
    "Idle",
    "InstallationFailed",
    "Installing",
    "Installed",
    "InstallRebooting",
    "InstallScheduled",
    "InstallVerificationFailed",
    "InvalidSignature",
    "SignatureVerified",
]
UpdateFirmwareStatus = Literal[
    "Accepted", "Rejected", "AcceptedCanceled", "InvalidCertificate", "RevokedCertificate"
]


class CertificateHashData(Payload):
    """Identifies one certificate by its issuer's hashes and its serial number."""

    hash_algorithm: HashAlgorithm
    issuer_name_hash: String128
    issuer_key_hash: String128
    serial_number: String40


class LogParameters(Payload):
    """Where to upload a log, and which span of it."""

    remote_location: String512
    oldest_timestamp: Omittable[DateTime] = None
    latest_timestamp: Omittable[DateTime] = None


class Firmware(Payload):
    """A signed firmware image: where to fetch it, when, and how to verify it."""

    location: String512
    retrieve_date_time: DateTime
    signing_certificate: String5500
    signature: String800
    install_date_time: Omittable[DateTime] = None


# Started by the charger.


class LogStatusNotification(Payload):
    """Reports how the upload of a log file is going."""

    status: UploadLogStatus
    request_id: Omittable[int] = None


class LogStatusNotificationResponse(Payload):
    pass


class SecurityEventNotification(Payload):
    """Reports a security event."""

    type: String50
    timestamp: DateTime
    tech_info: Omittable[String255] = None


class SecurityEventNotificationResponse(Payload):
    pass


class SignCertificate(Payload):
    """Asks the central system to have a certificate signing request signed."""

    csr: String5500


class SignCertificateResponse(Payload):
    status: GenericStatus


class SignedFirmwareStatusNotification(Payload):
    """Reports how a signed firmware update is going."""

    status: SignedFirmwareStatus
    request_id: Omittable[int] = None


class SignedFirmwareStatusNotificationResponse(Payload):
    pass


# Started by the central system.


class CertificateSigned(Payload):
    """Delivers the signed certificate chain a SignCertificate asked for."""

    certificate_chain: String10000


class CertificateSignedResponse(Payload):
    status: GenericStatus


class DeleteCertificate(Payload):
    """Asks the charger to delete an installed root certificate."""

    certificate_hash_data: CertificateHashData


class DeleteCertificateResponse(Payload):
    status: DeleteCertificateStatus


class ExtendedTriggerMessage(Payload):
    """TriggerMessage, with the security extension's messages to trigger."""

    requested_message: ExtendedMessageTrigger
    connector_id: Omittable[int] = None


class ExtendedTriggerMessageResponse(Payload):
    status: TriggerMessageStatus


class GetInstalledCertificateIds(Payload):
    """Asks which root certificates of one use the charger has installed."""

    certificate_type: CertificateUse


class GetInstalledCertificateIdsResponse(Payload):
    status: GetInstalledCertificateStatus
    certificate_hash_data: Omittable[
        Annotated[list[CertificateHashData], msgspec.Meta(min_length=1)]
    ] = None


class GetLog(Payload):
    """Asks the charger to upload a diagnostics or security log."""

    log: LogParameters
    log_type: LogType
    request_id: int
    retries: Omittable[int] = None
    retry_interval: Omittable[int] = None


class GetLogResponse(Payload):
    status: LogStatus
    filename: Omittable[String255] = None


class InstallCertificate(Payload):
    """Asks the charger to install a root certificate."""

    certificate_type: CertificateUse
    certificate: String5500


class InstallCertificateResponse(Payload):
    status: InstallCertificateStatus


class SignedUpdateFirmware(Payload):
    """Asks the charger to fetch, verify and install signed firmware."""

    request_id: int
    firmware: Firmware
    retries: Omittable[int] = None
    retry_interval: Omittable[int] = None


class SignedUpdateFirmwareResponse(Payload):
    status: UpdateFirmwareStatus


CHARGER_OPERATIONS: tuple[tuple[type[Payload], type[Payload]], ...] = (
    (LogStatusNotification, LogStatusNotificationResponse),
    (SecurityEventNotification, SecurityEventNotificationResponse),
    (SignCertificate, SignCertificateResponse),
    (SignedFirmwareStatusNotification, SignedFirmwareStatusNotificationResponse),
)
CENTRAL_OPERATIONS: tuple[tuple[type[Payload], type[Payload]], ...] = (
    (CertificateSigned, CertificateSignedResponse),
    (DeleteCertificate, DeleteCertificateResponse),
    (ExtendedTriggerMessage, ExtendedTriggerMessageResponse),
    (GetInstalledCertificateIds, GetInstalledCertificateIdsResponse),
    (GetLog, GetLogResponse),
    (InstallCertificate, InstallCertificateResponse),
    (SignedUpdateFirmware, SignedUpdateFirmwareResponse),
)
