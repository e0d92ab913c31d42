"""What the HTTP API and ``ocpp-cli`` answer with, and the bodies they take:
msgspec Structs, snake_case on the wire, one shape for both front ends.

Timestamps are returned as the processor stored them: RFC 3339 text in UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

CommandState = Literal["queued", "sent", "answered", "failed", "timed_out"]
IdTagStatus = Literal["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"]
IdTagText = Annotated[str, Meta(min_length=1, max_length=20)]


class Problem(msgspec.Struct, kw_only=True):
    """An RFC 9457 problem details body (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok", "unavailable"]


class LateReply(msgspec.Struct, kw_only=True):
    """A reply that came after the command had timed out (or was answered)."""

    at_ms: int | None = None
    state: str | None = None
    result: Any = None
    status: str | None = None
    error_code: str | None = None
    error_description: str | None = None


class Command(msgspec.Struct, kw_only=True):
    """A CALL sent to a charger, and its outcome once it has one."""

    command_id: str
    charge_point_id: str
    action: str
    state: CommandState
    request: Any = None
    result: Any = None
    status: str | None = None
    error_code: str | None = None
    error_description: str | None = None
    timeout_ms: int | None = None
    created_at_ms: int | None = None
    sent_at_ms: int | None = None
    completed_at_ms: int | None = None
    round_trip_ms: int | None = None
    late_reply: LateReply | None = None


class ChargePointSummary(msgspec.Struct, kw_only=True):
    charge_point_id: str
    charge_point_vendor: str | None = None
    charge_point_model: str | None = None
    registration_status: str | None = None
    last_boot: str | None = None
    last_seen: str | None = None


class ChargePointList(msgspec.Struct, kw_only=True):
    charge_points: list[ChargePointSummary]


class Connector(msgspec.Struct, kw_only=True):
    """A connector as its StatusNotifications left it; 0 is the charger."""

    connector_id: int
    status: str | None = None
    error_code: str | None = None
    info: str | None = None
    vendor_id: str | None = None
    vendor_error_code: str | None = None
    status_timestamp: str | None = None
    transaction_id: int | None = None


class ConfigurationKey(msgspec.Struct, kw_only=True):
    key: str
    readonly: bool = False
    value: str | None = None


class ChargePoint(msgspec.Struct, kw_only=True):
    """A charger: its BootNotification, when it was last heard from, its
    connectors and, if GetConfiguration was run, its configuration.
    ``attributes`` holds every other field the processor keeps on it
    (firmware and diagnostics status, local list version, ...)."""

    charge_point_id: str
    registration_status: str | None = None
    last_boot: str | None = None
    last_seen: str | None = None
    charge_point_vendor: str | None = None
    charge_point_model: str | None = None
    charge_point_serial_number: str | None = None
    charge_box_serial_number: str | None = None
    firmware_version: str | None = None
    iccid: str | None = None
    imsi: str | None = None
    meter_type: str | None = None
    meter_serial_number: str | None = None
    attributes: dict[str, str] = {}
    connectors: list[Connector] = []
    configuration: list[ConfigurationKey] | None = None


class Frame(msgspec.Struct, kw_only=True):
    """One OCPP-J frame: ``direction`` ``in`` (from the charger) or ``out``
    (to it), ``at`` when it was received or sent, ``frame`` its text."""

    at: str
    direction: str
    frame: str


class FrameList(msgspec.Struct, kw_only=True):
    """A charger's last frames, newest first. Those of our commands are
    always recorded; the rest while the charger is watched: reading this
    watches it until ``watched_until``."""

    charge_point_id: str
    watched_until: str
    frames: list[Frame]


class MeterValue(msgspec.Struct, kw_only=True):
    """One sampled value with every attribute the charger sent (absent ones
    null: OCPP's defaults, such as measurand Energy.Active.Import.Register,
    are implied, not filled in)."""

    sampled_at: str
    connector_id: int
    value: str
    measurand: str | None = None
    phase: str | None = None
    location: str | None = None
    unit: str | None = None
    context: str | None = None
    format: str | None = None
    # OCPP 2.0.1's signature of the value, as the station sent it
    # (signedMeterData, signingMethod, encodingMethod, publicKey); 1.6 sends
    # signed data in the value itself (format SignedData).
    signed_meter_value: dict[str, Any] | None = None


class Transaction(msgspec.Struct, kw_only=True):
    transaction_id: int
    charge_point_id: str | None = None
    connector_id: int | None = None
    id_tag: str | None = None
    active: bool
    meter_start: int | None = None
    start_timestamp: str | None = None
    reservation_id: int | None = None
    id_tag_status: str | None = None
    meter_stop: int | None = None
    stop_timestamp: str | None = None
    stop_reason: str | None = None
    stop_id_tag: str | None = None
    energy_wh: int | None = None


class TransactionDetail(Transaction, kw_only=True):
    """A transaction with its meter values, in time order. Read from the
    history (PostgreSQL); a transaction the archiver has not written yet is
    read from Redis, with no meter values (``archived`` false).
    ``meter_values_truncated`` says the list stopped at the API's cap."""

    archived: bool = True
    meter_values: list[MeterValue] = []
    meter_values_truncated: bool = False


class TransactionList(msgspec.Struct, kw_only=True):
    """Newest (highest id) first. ``next_before``, set when there are more,
    is the ``before`` to pass to get the next page."""

    transactions: list[Transaction]
    next_before: int | None = None


class TransactionV201(msgspec.Struct, kw_only=True):
    """An OCPP 2.0.1 session: its id is the station's text, unique per
    station, so a session is named by both. ``energy_wh`` is the
    Transaction.End register less the Transaction.Begin one, when both came."""

    charge_point_id: str
    transaction_id: str
    active: bool
    evse_id: int | None = None
    connector_id: int | None = None
    id_token: str | None = None
    id_token_type: str | None = None
    id_token_status: str | None = None
    remote_start_id: int | None = None
    reservation_id: int | None = None
    start_timestamp: str | None = None
    meter_start: int | None = None
    stop_timestamp: str | None = None
    meter_stop: int | None = None
    stopped_reason: str | None = None
    energy_wh: int | None = None


class TransactionEventRecord(msgspec.Struct, kw_only=True):
    """One TransactionEvent of a session, as the station numbered it."""

    seq_no: int
    event_type: str
    trigger_reason: str
    occurred_at: str
    offline: bool
    charging_state: str | None = None
    id_token: str | None = None


class TransactionV201Detail(TransactionV201, kw_only=True):
    """A session with its events in seqNo order and its meter values in
    time order, from the history; one the archiver has not written yet is
    read from Redis, with neither (``archived`` false)."""

    archived: bool = True
    events: list[TransactionEventRecord] = []
    meter_values: list[MeterValue] = []
    meter_values_truncated: bool = False


class TransactionV201List(msgspec.Struct, kw_only=True):
    """Latest started first (sessions whose Started has not come yet last).
    ``next_before``, set when there are more, is the ``before`` to pass to
    get the next page."""

    transactions: list[TransactionV201]
    next_before: str | None = None


class ChargerEvent(msgspec.Struct, kw_only=True):
    """A boot, a status change, a notification, a security event: ``kind``
    says which, ``details`` holds what the charger sent for it.
    ``record_id`` and ``seq`` are its key in the history (the record it
    came from, its place in it)."""

    kind: str
    occurred_at: str
    connector_id: int | None = None
    details: dict[str, Any] = {}
    record_id: str
    seq: int


class ChargerEventList(msgspec.Struct, kw_only=True):
    """Newest first; ``next_before``, when set, is the ``before`` cursor of
    the next page."""

    charge_point_id: str
    events: list[ChargerEvent]
    next_before: str | None = None


class CommandList(msgspec.Struct, kw_only=True):
    """A charger's commands from the history, newest first; ``next_before``,
    when set, is the ``before`` cursor of the next page."""

    commands: list[Command]
    next_before: str | None = None


class IdTagBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An authorization list entry as an operator writes it."""

    status: IdTagStatus
    expiry_date: Annotated[datetime, Meta(tz=True)] | None = None
    parent_id_tag: IdTagText | None = None


class IdTag(msgspec.Struct, kw_only=True):
    """An authorization list entry, and the transaction the tag is charging
    in, if any."""

    id_tag: str
    status: str
    expiry_date: str | None = None
    parent_id_tag: str | None = None
    active_transaction_id: int | None = None
