"""OCPP 1.6 payloads as msgspec Structs, with the official JSON schemas'
constraints: required fields, CiString lengths, enumerations, integers and
date-times. Field names are the schemas' camelCase on the wire.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

CiString20 = Annotated[str, msgspec.Meta(max_length=20)]
CiString25 = Annotated[str, msgspec.Meta(max_length=25)]
CiString50 = Annotated[str, msgspec.Meta(max_length=50)]
IdToken = CiString20

RegistrationStatus = Literal["Accepted", "Pending", "Rejected"]
AuthorizationStatus = Literal["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"]
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
ReadingContext = Literal[
    "Interruption.Begin",
    "Interruption.End",
    "Sample.Clock",
    "Sample.Periodic",
    "Transaction.Begin",
    "Transaction.End",
    "Trigger",
    "Other",
]
ValueFormat = Literal["Raw", "SignedData"]
Measurand = Literal[
    "Energy.Active.Export.Register",
    "Energy.Active.Import.Register",
    "Energy.Reactive.Export.Register",
    "Energy.Reactive.Import.Register",
    "Energy.Active.Export.Interval",
    "Energy.Active.Import.Interval",
    "Energy.Reactive.Export.Interval",
    "Energy.Reactive.Import.Interval",
    "Power.Active.Export",
    "Power.Active.Import",
    "Power.Offered",
    "Power.Reactive.Export",
    "Power.Reactive.Import",
    "Power.Factor",
    "Current.Import",
    "Current.Export",
    "Current.Offered",
    "Voltage",
    "Frequency",
    "Temperature",
    "SoC",
    "RPM",
]
Phase = Literal["L1", "L2", "L3", "N", "L1-N", "L2-N", "L3-N", "L1-L2", "L2-L3", "L3-L1"]
Location = Literal["Cable", "EV", "Inlet", "Outlet", "Body"]
UnitOfMeasure = Literal[
    "Wh",
    "kWh",
    "varh",
    "kvarh",
    "W",
    "kW",
    "VA",
    "kVA",
    "var",
    "kvar",
    "A",
    "V",
    "K",
    "Celcius",
    "Celsius",
    "Fahrenheit",
    "Percent",
]


class Payload(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    """Base of every OCPP payload: camelCase on the wire, and, as the official
    schemas say (``additionalProperties: false``), no unknown fields."""


class IdTagInfo(Payload):
    status: AuthorizationStatus
    expiry_date: datetime | None = None
    parent_id_tag: IdToken | None = None


class SampledValue(Payload):
    value: str
    context: ReadingContext | None = None
    format: ValueFormat | None = None
    measurand: Measurand | None = None
    phase: Phase | None = None
    location: Location | None = None
    unit: UnitOfMeasure | None = None


class MeterValue(Payload):
    timestamp: datetime
    sampled_value: list[SampledValue]


class BootNotification(Payload):
    charge_point_vendor: CiString20
    charge_point_model: CiString20
    charge_point_serial_number: CiString25 | None = None
    charge_box_serial_number: CiString25 | None = None
    firmware_version: CiString50 | None = None
    iccid: CiString20 | None = None
    imsi: CiString20 | None = None
    meter_type: CiString25 | None = None
    meter_serial_number: CiString25 | None = None


class BootNotificationResponse(Payload):
    status: RegistrationStatus
    current_time: datetime
    interval: int


class Heartbeat(Payload):
    pass


class HeartbeatResponse(Payload):
    current_time: datetime


class StartTransaction(Payload):
    connector_id: int
    id_tag: IdToken
    meter_start: int
    timestamp: datetime
    reservation_id: int | None = None


class StartTransactionResponse(Payload):
    id_tag_info: IdTagInfo
    transaction_id: int


class StopTransaction(Payload):
    meter_stop: int
    timestamp: datetime
    transaction_id: int
    id_tag: IdToken | None = None
    reason: StopReason | None = None
    transaction_data: list[MeterValue] | None = None


class StopTransactionResponse(Payload):
    id_tag_info: IdTagInfo | None = None
