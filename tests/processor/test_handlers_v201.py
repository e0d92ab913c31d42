"""The OCPP 2.0.1 handlers, through the dispatcher, with state in memory;
every answer checked against the official 2.0.1 response schema."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import ocpp
import pytest

from processor import history, keys
from processor.dispatch import Delivery, Dispatcher, Limits, Outcome
from processor.protocols import OCPP201, protocols
from processor.types import HandlerConfig, IdTagRecord
from processor.v201.handlers import ROUTES
from processor.v201.handlers.transactions import transaction_event_reads_state
from processor.v201.messages import CHARGER_INITIATED, TransactionEvent
from tests.messages import call
from tests.processor.memory_state import MemoryState

pytestmark = pytest.mark.anyio

NOW = datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
SCHEMAS = Path(ocpp.__file__).parent / "v201" / "schemas"
STATION = {"model": "M1", "vendorName": "Acme", "serialNumber": "S-1",
           "modem": {"iccid": "8931", "imsi": "2620"}}  # fmt: skip


@functools.cache
def validator(name: str) -> jsonschema.Draft6Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    return jsonschema.Draft6Validator(schema, format_checker=jsonschema.FormatChecker())


async def run(action: str, payload: Any, state: MemoryState | None = None,
              **config: Any) -> Outcome:  # fmt: skip
    d = Dispatcher(protocols(), state or MemoryState(), HandlerConfig(**config), Limits())
    raw = call("CS1", "m1", action, payload, OCPP201)
    [out] = await d.handle_batch([Delivery(b"1-0", raw)], NOW)
    return out


def answer(out: Outcome, action: str) -> dict[str, Any]:
    """The CALLRESULT's payload, once the official schema has passed it."""
    frame = json.loads(out.reply)["payload"]
    assert frame[0] == 3, frame
    errors = [e.message for e in validator(f"{action}Response").iter_errors(frame[2])]
    assert not errors, errors
    body: dict[str, Any] = frame[2]
    return body


async def test_boot_registers_the_station_under_the_fields_16_uses() -> None:
    out = await run("BootNotification", {"chargingStation": STATION, "reason": "PowerUp"})
    assert answer(out, "BootNotification") == {
        "currentTime": "2024-01-01T12:00:00Z", "interval": 300, "status": "Accepted"}  # fmt: skip
    hset = next(op for op in out.effects.ops if op[:2] == ["call", "HSET"])
    fields = dict(zip(hset[3::2], hset[4::2], strict=True))
    assert fields["charge_point_vendor"] == "Acme" and fields["charge_point_model"] == "M1"
    assert fields["charge_point_serial_number"] == "S-1" and fields["iccid"] == "8931"
    assert fields["boot_reason"] == "PowerUp" and fields["protocol"] == OCPP201


async def test_boot_under_known_only_tells_an_unknown_station_pending() -> None:
    out = await run("BootNotification", {"chargingStation": STATION, "reason": "PowerUp"},
                    registration_policy="known-only")  # fmt: skip
    assert answer(out, "BootNotification")["status"] == "Pending"


async def test_heartbeat_answers_the_time() -> None:
    out = await run("Heartbeat", {})
    assert answer(out, "Heartbeat") == {"currentTime": "2024-01-01T12:00:00Z"}


async def test_status_is_kept_per_evse_and_connector() -> None:
    body = {"timestamp": "2024-01-01T11:59:00Z", "connectorStatus": "Occupied", "evseId": 2,
            "connectorId": 1}  # fmt: skip
    out = await run("StatusNotification", body)
    assert answer(out, "StatusNotification") == {}
    [newer] = [op for op in out.effects.ops if keys.evse_connector("CS1", 2, 1) in op]
    assert "Occupied" in newer
    assert ["call", "SADD", keys.evse_connectors("CS1"), "2/1"] in out.effects.ops


@pytest.mark.parametrize(
    ("token_type", "record", "unknown", "status"),
    [
        ("ISO14443", IdTagRecord("Accepted"), "Accepted", "Accepted"),
        ("ISO14443", IdTagRecord("Blocked"), "Accepted", "Blocked"),
        ("ISO14443", IdTagRecord("Accepted", "2023-01-01T00:00:00Z"), "Accepted", "Expired"),
        ("ISO14443", None, "Invalid", "Unknown"),
        ("ISO14443", None, "Accepted", "Accepted"),
        ("NoAuthorization", None, "Invalid", "Accepted"),
    ],
)
async def test_authorize_reads_the_list_16_shares(
    token_type: str, record: IdTagRecord | None, unknown: str, status: str
) -> None:
    state = MemoryState()
    if record is not None:
        state.tags["TOKEN1"] = record
    body = {"idToken": {"idToken": "TOKEN1", "type": token_type}}
    out = await run("Authorize", body, state, unknown_id_tag_status=unknown)
    assert answer(out, "Authorize")["idTokenInfo"]["status"] == status


T = "2024-01-01T11:59:00Z"
COMPONENT = {"name": "Connector", "evse": {"id": 1, "connectorId": 1}}
SCHEDULE = {"id": 1, "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11000.0}]}  # fmt: skip
PROFILE = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
           "chargingProfileKind": "Absolute", "chargingSchedule": [SCHEDULE]}  # fmt: skip
SAMPLES = [{"timestamp": T, "sampledValue": [
    {"value": 1.5, "measurand": "Energy.Active.Import.Register",
     "unitOfMeasure": {"unit": "Wh", "multiplier": 3}},
    {"value": 16.1, "measurand": "Current.Import", "phase": "L1",
     "signedMeterValue": {"signedMeterData": "OCMF|{}", "signingMethod": "ECDSA",
                          "encodingMethod": "OCMF", "publicKey": "K"}},
]}]  # fmt: skip
# A valid request of every message a station sends, with its handler's answer.
REQUESTS: dict[str, dict[str, Any]] = {
    "Authorize": {"idToken": {"idToken": "T1", "type": "ISO14443"}},
    "BootNotification": {"chargingStation": STATION, "reason": "PowerUp"},
    "ClearedChargingLimit": {"chargingLimitSource": "EMS", "evseId": 1},
    "DataTransfer": {"vendorId": "com.acme", "messageId": "x", "data": {"a": [1, 2]}},
    "FirmwareStatusNotification": {"status": "Installed", "requestId": 4},
    "Get15118EVCertificate": {"iso15118SchemaVersion": "urn:iso:15118:2:2013:MsgDef",
                              "action": "Install", "exiRequest": "AAEC"},
    "GetCertificateStatus": {"ocspRequestData": {
        "hashAlgorithm": "SHA256", "issuerNameHash": "ab", "issuerKeyHash": "cd",
        "serialNumber": "01", "responderURL": "http://ocsp.example"}},
    "Heartbeat": {},
    "LogStatusNotification": {"status": "Uploaded", "requestId": 2},
    "MeterValues": {"evseId": 1, "meterValue": SAMPLES},
    "NotifyChargingLimit": {"chargingLimit": {"chargingLimitSource": "SO", "isGridCritical": True},
                            "evseId": 1, "chargingSchedule": [SCHEDULE]},
    "NotifyCustomerInformation": {"data": "name: X", "seqNo": 0, "generatedAt": T,
                                  "requestId": 3},
    "NotifyDisplayMessages": {"requestId": 5},
    "NotifyEVChargingNeeds": {"chargingNeeds": {"requestedEnergyTransfer": "AC_three_phase"},
                              "evseId": 1},
    "NotifyEVChargingSchedule": {"timeBase": T, "chargingSchedule": SCHEDULE, "evseId": 1},
    "NotifyEvent": {"generatedAt": T, "seqNo": 0, "eventData": [{
        "eventId": 7, "timestamp": T, "trigger": "Delta", "actualValue": "Faulted",
        "component": COMPONENT, "eventNotificationType": "HardWiredNotification",
        "variable": {"name": "AvailabilityState"}}]},
    "NotifyMonitoringReport": {"requestId": 6, "seqNo": 0, "generatedAt": T},
    "NotifyReport": {"requestId": 11, "generatedAt": T, "seqNo": 0, "tbc": True, "reportData": [
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
         "variableAttribute": [{"value": "300", "mutability": "ReadWrite", "persistent": True}],
         "variableCharacteristics": {"dataType": "integer", "unit": "s",
                                     "supportsMonitoring": False}},
        {"component": {"name": "Connector", "evse": {"id": 1, "connectorId": 1}},
         "variable": {"name": "ConnectorType"},
         "variableAttribute": [{"value": "cType2", "mutability": "ReadOnly"},
                               {"type": "Target"}]},
    ]},
    "PublishFirmwareStatusNotification": {"status": "Published", "location": ["http://x"],
                                          "requestId": 8},
    "ReportChargingProfiles": {"requestId": 9, "chargingLimitSource": "CSO",
                               "chargingProfile": [PROFILE], "evseId": 1},
    "ReservationStatusUpdate": {"reservationId": 3, "reservationUpdateStatus": "Expired"},
    "SecurityEventNotification": {"type": "StartupOfTheDevice", "timestamp": T},
    "SignCertificate": {"csr": "-----BEGIN CERTIFICATE REQUEST-----"},
    "StatusNotification": {"timestamp": T, "connectorStatus": "Available", "evseId": 1,
                           "connectorId": 1},
    "TransactionEvent": {"eventType": "Started", "timestamp": T, "triggerReason": "Authorized",
                         "seqNo": 0, "transactionInfo": {"transactionId": "TX-9"},
                         "evse": {"id": 1}, "idToken": {"idToken": "T1", "type": "ISO14443"},
                         "meterValue": SAMPLES},
}  # fmt: skip


@pytest.mark.parametrize("action", sorted(REQUESTS))
async def test_every_message_a_station_sends_is_answered_schema_valid(action: str) -> None:
    payload = REQUESTS[action]
    errors = [e.message for e in validator(f"{action}Request").iter_errors(payload)]
    assert not errors, f"test input is not a valid {action}: {errors}"
    answer(await run(action, payload), action)


async def test_meter_values_keep_the_latest_in_the_units_unit_and_every_sample_in_history() -> None:
    out = await run("MeterValues", REQUESTS["MeterValues"])
    [latest] = [op for op in out.effects.ops if op[0] == "latest"]
    fields = dict(zip(latest[4::2], latest[5::2], strict=True))
    assert fields["Energy.Active.Import.Register"] == "2024-01-01T11:59:00.000000Z Wh 1500"
    assert fields["Current.Import:L1"] == "2024-01-01T11:59:00.000000Z Wh 16.1"
    [reading] = out.effects.records
    samples = json.loads(reading.sampled_values)
    assert samples[1]["signedMeterValue"]["signedMeterData"] == "OCMF|{}"
    assert reading.connector_id == 1 and reading.transaction_id is None


async def test_ev_charging_needs_are_rejected_without_a_smart_charging_engine() -> None:
    out = await run("NotifyEVChargingNeeds", REQUESTS["NotifyEVChargingNeeds"])
    assert answer(out, "NotifyEVChargingNeeds")["status"] == "Rejected"


@pytest.mark.parametrize("action", ["Get15118EVCertificate", "GetCertificateStatus"])
async def test_certificate_requests_fail_without_a_pki(action: str) -> None:
    assert answer(await run(action, REQUESTS[action]), action)["status"] == "Failed"


def test_every_message_a_station_sends_has_a_handler() -> None:
    assert set(REQUESTS) == set(ROUTES) == CHARGER_INITIATED


def tx_event(event_type: str, seq: int, tid: str = "TX-1", **extra: Any) -> dict[str, Any]:
    info = {"transactionId": tid, **extra.pop("info", {})}
    return {"eventType": event_type, "timestamp": T, "triggerReason": "Authorized",
            "seqNo": seq, "transactionInfo": info, **extra}  # fmt: skip


def begin(wh: float, context: str = "Transaction.Begin") -> list[dict[str, Any]]:
    return [{"timestamp": T, "sampledValue": [{"value": wh, "context": context}]}]


async def test_a_started_event_sets_the_sessions_facts_once_and_answers_for_its_token() -> None:
    state = MemoryState()
    state.tags["T1"] = IdTagRecord("Blocked")
    body = tx_event(
        "Started",
        0,
        evse={"id": 2, "connectorId": 1},
        idToken={"idToken": "T1", "type": "ISO14443"},
        meterValue=begin(1.25e3),
    )
    out = await run("TransactionEvent", body, state)
    assert answer(out, "TransactionEvent") == {"idTokenInfo": {"status": "Blocked"}}
    key = keys.transaction_v201("CS1", "TX-1")
    once = {op[3]: op[4] for op in out.effects.ops if op[1] == "HSETNX" and op[2] == key}
    assert once == {"started_at": "2024-01-01T11:59:00.000000Z"}
    newer = {op[2]: (op[3], op[4:]) for op in out.effects.ops if op[0] == "hset_newer"}
    # The EVSE and the token: the lowest seqNo wins (its stamp the highest).
    assert newer["evse_seq"] == ("9" * 20, ["evse_id", "2", "connector_id", "1"])
    assert newer["id_token_seq"] == ("9" * 20, ["id_token", "T1", "id_token_type", "ISO14443"])
    # The session's state: the highest seqNo wins.
    assert newer["seq_no"][0] == "0" * 20
    reading, event = sorted(out.effects.records, key=lambda r: type(r).__name__)
    assert isinstance(event, history.TransactionEvent) and event.meter == 1250
    assert (event.evse_id, event.id_token_status) == (2, "Blocked")
    assert isinstance(reading, history.MeterReading) and reading.transaction_id == "TX-1"
    assert reading.connector_id == 2


async def test_a_later_event_without_its_evse_finds_it_in_hot_state() -> None:
    state = MemoryState()
    state.v201[("CS1", "TX-3")] = {"evse_id": "3"}
    body = tx_event("Ended", 7, "TX-3", meterValue=begin(9000, "Transaction.End"),
                    info={"stoppedReason": "EVDisconnected"})  # fmt: skip
    out = await run("TransactionEvent", body, state)
    assert answer(out, "TransactionEvent") == {}
    key = keys.transaction_v201("CS1", "TX-3")
    once = {op[3]: op[4] for op in out.effects.ops if op[1] == "HSETNX" and op[2] == key}
    assert once == {"ended_at": "2024-01-01T11:59:00.000000Z", "stopped_reason": "EVDisconnected"}
    assert ["call", "EXPIRE", key, "604800"] in out.effects.ops
    event = next(r for r in out.effects.records if isinstance(r, history.TransactionEvent))
    assert event.meter == 9000 and event.stopped_reason == "EVDisconnected"
    [latest] = [op for op in out.effects.ops if op[0] == "latest"]
    assert latest[1] == keys.meter_latest("CS1", 3)


async def test_a_report_part_fills_the_device_model_and_the_reports_progress() -> None:
    out = await run("NotifyReport", REQUESTS["NotifyReport"])
    assert answer(out, "NotifyReport") == {}
    ops = {op[2]: op[3:] for op in out.effects.ops if op[1] == "HSET"}
    heartbeat = '["OCPPCommCtrlr","",null,null,"HeartbeatInterval","","Actual"]'
    connector = '["Connector","",1,1,"ConnectorType","","Actual"]'
    target = '["Connector","",1,1,"ConnectorType","","Target"]'
    [newest] = [op for op in out.effects.ops if op[0] == "newest_fields"]
    assert newest[1:4] == [
        keys.variables("CS1"),
        keys.variable_times("CS1"),
        "2024-01-01T11:59:00.000000Z",
    ]
    values = dict(zip(*[iter(newest[4:])] * 2, strict=True))
    assert values == {heartbeat: "300", connector: "cType2"}  # the Target has no value
    meta = dict(zip(*[iter(ops[keys.variable_meta("CS1")])] * 2, strict=True))
    assert set(meta) == {heartbeat, connector, target}
    assert json.loads(meta[heartbeat])["characteristics"]["unit"] == "s"
    assert dict(zip(*[iter(ops[keys.report("CS1", 11)])] * 2, strict=True)) == {
        "part:0": "2024-01-01T11:59:00.000000Z"}  # tbc: not the last  # fmt: skip
    reported = [r for r in out.effects.records if isinstance(r, history.VariableReported)]
    # Keyed by the part: the request id, when the report was made, seqNo.
    at = "2024-01-01T11:59:00.000000Z"
    assert [(r.origin, r.position, r.value) for r in reported] == [
        (f"report:11:{at}:0", 0, "300"),
        (f"report:11:{at}:0", 1, "cType2"),
        (f"report:11:{at}:0", 2, None),
    ]


async def test_an_evse_said_once_is_remembered_within_a_batch_without_reading() -> None:
    """Started and an Updated in one batch: the Updated's values go to the
    Started's EVSE though its commit has not happened yet."""

    class Counting(MemoryState):
        reads = 0

        async def transaction_v201(self, cp: str, tid: str) -> dict[str, str]:
            Counting.reads += 1
            return await super().transaction_v201(cp, tid)

    d = Dispatcher(protocols(), Counting(), HandlerConfig(), Limits())
    started = tx_event("Started", 0, "TX-4", evse={"id": 4, "connectorId": 1})
    updated = tx_event("Updated", 1, "TX-4", meterValue=begin(2000, "Sample.Periodic"))
    outs = await d.handle_batch([
        Delivery(b"1-0", call("CS1", "m1", "TransactionEvent", started, OCPP201)),
        Delivery(b"2-0", call("CS1", "m2", "TransactionEvent", updated, OCPP201)),
    ], NOW)  # fmt: skip
    [latest] = [op for op in outs[1].effects.ops if op[0] == "latest"]
    assert latest[1] == keys.meter_latest("CS1", 4)
    assert Counting.reads == 0


def test_which_transaction_events_read_state() -> None:
    """Told from the request: what the handler will await."""
    periodic = begin(5, "Sample.Periodic")

    def reads(body: dict[str, Any]) -> bool:
        return transaction_event_reads_state("CS-R", msgspec.convert(body, TransactionEvent))

    assert reads(tx_event("Started", 0, "TX-R1", evse={"id": 2}))  # the allow-list
    assert reads(tx_event("Updated", 1, "TX-R1", idToken={"idToken": "T", "type": "Central"}))
    # Readings of a session whose EVSE is not known here, unless they name it.
    assert reads(tx_event("Updated", 1, "TX-R1", meterValue=periodic))
    assert not reads(tx_event("Updated", 1, "TX-R1", meterValue=periodic, evse={"id": 2}))
    assert not reads(tx_event("Ended", 2, "TX-R1"))  # no readings: no EVSE looked up


async def test_periodic_updates_of_sessions_seen_here_wait_for_nothing() -> None:
    """Their EVSE remembered, a batch of them is handled inline: the previous
    commit is not waited for, and no read is made."""
    d = Dispatcher(protocols(), MemoryState(), HandlerConfig(), Limits())
    started = tx_event("Started", 0, "TX-W", evse={"id": 3, "connectorId": 1})
    await d.handle_batch([Delivery(b"1-0", call("CS-W", "m1", "TransactionEvent", started,
                                                OCPP201))], NOW)  # fmt: skip
    waited: list[bool] = []

    async def settled() -> None:
        waited.append(True)

    updates = [Delivery(f"{n}-0".encode(), call("CS-W", f"m{n}", "TransactionEvent",
                        tx_event("Updated", n, "TX-W", meterValue=begin(n, "Sample.Periodic"),
                                 triggerReason="MeterValuePeriodic"), OCPP201))
               for n in range(2, 6)]  # fmt: skip
    outs = await d.handle_batch(updates, NOW, settled)
    assert len(outs) == 4 and not waited
    latest = [op for out in outs for op in out.effects.ops if op[0] == "latest"]
    assert {op[1] for op in latest} == {keys.meter_latest("CS-W", 3)}
    # An event that reads state (a Started) still waits for the commit.
    other = tx_event("Started", 0, "TX-W2", evse={"id": 1})
    await d.handle_batch([Delivery(b"9-0", call("CS-W", "m9", "TransactionEvent", other,
                                                OCPP201))], NOW, settled)  # fmt: skip
    assert waited == [True]


@pytest.mark.parametrize(("info", "writes"), [({}, False), ({"chargingState": "Charging"}, True)])
async def test_a_periodic_update_changes_no_session_state(
    info: dict[str, str], writes: bool
) -> None:
    body = tx_event("Updated", 3, "TX-5", info=info, meterValue=begin(5, "Sample.Periodic"),
                    triggerReason="MeterValuePeriodic")  # fmt: skip
    out = await run("TransactionEvent", body)
    assert any(op[0] == "hset_newer" for op in out.effects.ops) is writes
    expire = ["call", "EXPIRE", keys.transaction_v201("CS1", "TX-5"), "604800"]
    assert (expire in out.effects.ops) is writes
    # Its readings go to history either way; the event itself only if it says something.
    kinds = sorted(type(r).__name__ for r in out.effects.records)
    assert kinds == (["MeterReading", "TransactionEvent"] if writes else ["MeterReading"])


async def test_known_only_opens_no_session_for_a_station_off_the_list() -> None:
    started = tx_event("Started", 0, "TX-6", evse={"id": 1})
    out = await run("TransactionEvent", started, registration_policy="known-only")
    assert json.loads(out.reply)["payload"][2] == "SecurityError" and not out.effects.ops
    # Its Ended is still taken: refused, it would come again and again.
    ended = tx_event("Ended", 1, "TX-6")
    out = await run("TransactionEvent", ended, registration_policy="known-only")
    assert answer(out, "TransactionEvent") == {}


@pytest.mark.parametrize("trigger", ["RemoteStop", "Deauthorized", "EnergyLimitReached"])
async def test_an_update_for_any_other_reason_is_kept(trigger: str) -> None:
    body = tx_event("Updated", 4, "TX-7", triggerReason=trigger)
    out = await run("TransactionEvent", body)
    assert any(op[0] == "hset_newer" for op in out.effects.ops)
    [event] = out.effects.records
    assert isinstance(event, history.TransactionEvent) and event.trigger_reason == trigger


async def test_a_multiplier_no_number_should_have_neither_crashes_nor_grows() -> None:
    huge = [{"timestamp": T, "sampledValue": [
        {"value": 1.5, "context": "Transaction.Begin",
         "unitOfMeasure": {"unit": "Wh", "multiplier": 999999}}]}]  # fmt: skip
    out = await run("TransactionEvent", tx_event("Started", 0, "TX-8", meterValue=huge))
    answer(out, "TransactionEvent")
    [latest] = [op for op in out.effects.ops if op[0] == "latest"]
    assert latest[-1].endswith(" Wh 1.5e999999")
    event = next(r for r in out.effects.records if isinstance(r, history.TransactionEvent))
    assert event.meter is None  # no bigint holds it


async def test_the_sessions_meter_is_the_total_register_not_a_phases() -> None:
    readings = [{"timestamp": T, "sampledValue": [
        {"value": 400.0, "context": "Transaction.Begin", "phase": "L1"},
        {"value": 1200.0, "context": "Transaction.Begin"}]}]  # fmt: skip
    out = await run("TransactionEvent", tx_event("Started", 0, "TX-9", meterValue=readings))
    event = next(r for r in out.effects.records if isinstance(r, history.TransactionEvent))
    assert event.meter == 1200
