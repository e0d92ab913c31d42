"""OCPP 2.0.1 payloads as msgspec Structs, generated from the official JSON
schemas by tools/v201_messages.py: for each of the 64 actions, the request
(named after the action) and its response (``<Action>Response``), and the
object types and enumerations they share, under their schema names
(``IdTokenType``, ``BootReasonEnumType``).

    enums      the enumerations, as ``Literal`` aliases
    datatypes  the bounded string types and the object types (the base
               Structs and shared field types are processor.payload's)
    requests   the 64 requests
    responses  the 64 responses
"""

from __future__ import annotations

import msgspec

from processor.v201.messages import datatypes, enums, requests, responses
from processor.v201.messages.datatypes import *  # noqa: F403
from processor.v201.messages.enums import *  # noqa: F403
from processor.v201.messages.requests import *  # noqa: F403
from processor.v201.messages.responses import *  # noqa: F403

REQUESTS: dict[str, type[msgspec.Struct]] = {
    name: getattr(requests, name) for name in requests.__all__
}
RESPONSES: dict[str, type[msgspec.Struct]] = {
    name.removesuffix("Response"): getattr(responses, name) for name in responses.__all__
}

# The messages a charging station sends; DataTransfer is either side's to send.
CHARGER_INITIATED = frozenset(
    {
        "Authorize",
        "BootNotification",
        "ClearedChargingLimit",
        "DataTransfer",
        "FirmwareStatusNotification",
        "Get15118EVCertificate",
        "GetCertificateStatus",
        "Heartbeat",
        "LogStatusNotification",
        "MeterValues",
        "NotifyChargingLimit",
        "NotifyCustomerInformation",
        "NotifyDisplayMessages",
        "NotifyEVChargingNeeds",
        "NotifyEVChargingSchedule",
        "NotifyEvent",
        "NotifyMonitoringReport",
        "NotifyReport",
        "PublishFirmwareStatusNotification",
        "ReportChargingProfiles",
        "ReservationStatusUpdate",
        "SecurityEventNotification",
        "SignCertificate",
        "StatusNotification",
        "TransactionEvent",
    }
)
CENTRAL_INITIATED = frozenset(REQUESTS) - CHARGER_INITIATED | {"DataTransfer"}

__all__ = [
    "CENTRAL_INITIATED",
    "CHARGER_INITIATED",
    "REQUESTS",
    "RESPONSES",
    *datatypes.__all__,
    *enums.__all__,
    *requests.__all__,
    *responses.__all__,
]
