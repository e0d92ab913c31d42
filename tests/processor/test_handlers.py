"""The central-system logic of every charger-initiated operation, without
Redis: what each handler answers and which writes it asks for."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from processor import history, keys
from processor.dispatch import Delivery, Dispatcher, Limits, Outcome
from processor.effects import Op
from processor.protocols import protocols
from processor.types import Context, HandlerConfig, IdTagRecord
from processor.v16.handlers import ROUTES
from processor.v16.messages import DataTransfer, DataTransferResponse
from tests.messages import call
from tests.processor.memory_state import MemoryState

pytestmark = pytest.mark.anyio

NOW = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
CP = "CP1"


async def run(action: str, payload: Any, state: MemoryState | None = None, cp: str = CP,
              **config: Any) -> Outcome:  # fmt: skip
    d = Dispatcher(protocols(), state or MemoryState(), HandlerConfig(**config), Limits())
    [out] = await d.handle_batch([Delivery(b"1-0", call(cp, "m1", action, payload))], NOW)
    return out


def answer(out: Outcome) -> Any:
    frame = json.loads(out.reply)["payload"]
    return frame[2] if frame[0] == 3 else frame[2:4]


def anomalies(out: Outcome) -> list[str]:
    return [op[op.index("kind") + 1] for op in out.effects.ops
            if op[:3] == ["call", "XADD", keys.ANOMALIES]]  # fmt: skip


def ops(out: Outcome, name: str) -> list[Op]:
    return [op for op in out.effects.ops if name in op[:2]]


def start_body(
    tag: str = "TAG", meter: int = 100, ts: str = "2024-01-01T11:00:00Z"
) -> dict[str, Any]:
    return {"connectorId": 1, "idTag": tag, "meterStart": meter, "timestamp": ts}


@pytest.mark.parametrize(
    ("record", "active", "config", "status"),
    [
        (None, None, {}, "Accepted"),
        (None, None, {"unknown_id_tag_status": "Invalid"}, "Invalid"),
        (IdTagRecord("Blocked"), None, {}, "Blocked"),
        (IdTagRecord("Accepted", "2023-12-31T00:00:00Z"), None, {}, "Expired"),
        (IdTagRecord("Accepted", "2025-01-01T00:00:00Z"), None, {}, "Accepted"),
        (IdTagRecord("Accepted"), 7, {}, "ConcurrentTx"),
        (IdTagRecord("Accepted"), 7, {"allow_concurrent_tx": True}, "Accepted"),
        (IdTagRecord("garbage"), None, {}, "Invalid"),
    ],
)
async def test_authorize_answers_from_the_list(
    record: IdTagRecord | None, active: int | None, config: dict[str, Any], status: str
) -> None:
    state = MemoryState()
    if record is not None:
        state.tags["TAG"] = record
    if active is not None:
        state.active["TAG"] = active
    out = await run("Authorize", {"idTag": "TAG"}, state, **config)
    assert answer(out)["idTagInfo"]["status"] == status


async def test_authorize_passes_on_expiry_and_parent() -> None:
    state = MemoryState()
    state.tags["TAG"] = IdTagRecord("Accepted", "2025-01-01T00:00:00Z", "PARENT")
    info = answer(await run("Authorize", {"idTag": "TAG"}, state))["idTagInfo"]
    assert info == {"status": "Accepted", "expiryDate": "2025-01-01T00:00:00Z",
                    "parentIdTag": "PARENT"}  # fmt: skip


@pytest.mark.parametrize(("known", "config", "status"), [
    (False, {}, "Accepted"),
    (False, {"registration_policy": "known-only"}, "Pending"),
    (False, {"registration_policy": "known-only", "unknown_charger_status": "Rejected"},
     "Rejected"),
    (True, {"registration_policy": "known-only"}, "Accepted"),
])  # fmt: skip
async def test_boot_registration_policy(known: bool, config: dict[str, Any], status: str) -> None:
    state = MemoryState()
    if known:
        state.known.add(CP)
    body = {"chargePointVendor": "V", "chargePointModel": "M", "iccid": "8901", "imsi": "2620"}
    out = await run("BootNotification", body, state, **config)
    assert answer(out)["status"] == status
    [hset] = ops(out, "HSET")
    record = dict(zip(hset[3::2], hset[4::2], strict=True))
    assert record["registration_status"] == status
    assert record["iccid"] == "8901" and record["imsi"] == "2620"
    assert record["last_boot"] == "2024-01-01T12:00:00.000000Z"


async def test_known_only_refuses_a_stranger_its_start_and_opens_nothing() -> None:
    state = MemoryState()
    out = await run("StartTransaction", start_body(), state, registration_policy="known-only")
    code, description = answer(out)
    assert code == "SecurityError"
    assert CP in description and "allow-list" in description
    # Nothing reserved (no transactionId allocated), nothing to commit.
    assert state.calls == [] and state.ids == {}
    assert not out.effects.ops and not out.effects.records


async def test_known_only_refuses_a_stranger_its_authorize() -> None:
    state = MemoryState()
    state.tags["TAG"] = IdTagRecord("Accepted")
    out = await run("Authorize", {"idTag": "TAG"}, state, registration_policy="known-only")
    assert answer(out)[0] == "SecurityError"  # not an oracle of valid cards
    state.known.add(CP)
    out = await run("Authorize", {"idTag": "TAG"}, state, registration_policy="known-only")
    assert answer(out) == {"idTagInfo": {"status": "Accepted"}}


async def test_a_charger_cannot_stop_another_chargers_transaction() -> None:
    state = await opened(MemoryState())  # CP's transaction 1
    out = await run("StopTransaction", stop_body(), state, cp="INTRUDER")
    assert answer(out) == {}
    assert not ops(out, "hset_once") and not ops(out, "unset_if")
    assert anomalies(out) == ["StopTransaction for another charger's transaction"]
    assert not [r for r in out.effects.records if isinstance(r, history.TransactionStopped)]


@pytest.mark.parametrize(("known", "config"), [
    (True, {"registration_policy": "known-only"}),
    (False, {}),
    (False, {"registration_policy": "accept-all"}),
])  # fmt: skip
async def test_a_known_charger_or_accept_all_starts_as_before(
    known: bool, config: dict[str, Any]
) -> None:
    state = MemoryState()
    if known:
        state.known.add(CP)
    out = await run("StartTransaction", start_body(), state, **config)
    assert answer(out) == {"idTagInfo": {"status": "Accepted"}, "transactionId": 1}
    assert len(state.calls) == 1 and ops(out, "HSET")


async def test_start_is_concurrent_when_the_tag_charges_elsewhere() -> None:
    state = MemoryState()
    state.tags["TAG"] = IdTagRecord("Accepted")
    first = answer(await run("StartTransaction", start_body(), state))
    second = answer(await run("StartTransaction", start_body(meter=5), state))
    again = answer(await run("StartTransaction", start_body(), state))
    assert first["idTagInfo"]["status"] == "Accepted"
    assert second["idTagInfo"]["status"] == "ConcurrentTx"
    assert second["transactionId"] != first["transactionId"]
    assert again == first


async def test_start_records_what_the_charger_was_told() -> None:
    state = MemoryState()
    state.tags["TAG"] = IdTagRecord("Blocked")
    out = await run("StartTransaction", start_body(), state)
    assert answer(out)["idTagInfo"]["status"] == "Blocked"
    assert ["call", "HSET", keys.transaction(1), "id_tag_status", "Blocked"] in out.effects.ops
    [started] = out.effects.records
    assert isinstance(started, history.TransactionStarted)
    assert (started.transaction_id, started.id_tag_status) == (1, "Blocked")


def stop_body(meter: int = 1100, ts: str = "2024-01-01T11:30:00Z", **extra: Any) -> dict[str, Any]:
    return {"transactionId": 1, "meterStop": meter, "timestamp": ts, **extra}


async def opened(state: MemoryState) -> MemoryState:
    await run("StartTransaction", start_body(), state)
    return state


async def test_stop_closes_the_transaction_with_its_energy() -> None:
    state = await opened(MemoryState())
    out = await run("StopTransaction", stop_body(reason="Local", idTag="TAG"), state)
    assert answer(out) == {"idTagInfo": {"status": "Accepted"}}
    [close] = ops(out, "hset_once")
    assert close[1:5] == [keys.transaction(1), "closed", keys.ANOMALIES,
                          "StopTransaction for a closed transaction"]  # fmt: skip
    fields = dict(zip(close[5::2], close[6::2], strict=True))
    assert fields == {"meter_stop": "1100", "stop_timestamp": "2024-01-01T11:30:00.000000Z",
                      "stop_reason": "Local", "stop_id_tag": "TAG",
                      "energy_wh": "1000"}  # fmt: skip
    assert ["unset_if", keys.id_tag_active("TAG"), "", "1"] in out.effects.ops
    assert ["unset_if", keys.connector(CP, 1), "transaction_id", "1"] in out.effects.ops
    assert ["call", "SREM", keys.ACTIVE_TRANSACTIONS, "1"] in out.effects.ops
    assert ["call", "EXPIRE", keys.transaction(1), str(7 * 86400)] in out.effects.ops
    assert out.effects.records == [history.TransactionStopped(
        CP, 1, "2024-01-01T11:30:00.000000Z", 1100, "Local", "TAG")]  # fmt: skip
    assert anomalies(out) == []


@pytest.mark.parametrize(("body", "kind"), [
    (stop_body(meter=50), "meterStop below meterStart"),
    (stop_body(ts="2024-01-01T10:00:00Z"), "stop before start"),
    (stop_body(ts="2024-01-02T12:00:00Z"), "timestamp in the future"),
    ({**stop_body(), "transactionId": 99}, "StopTransaction for an unknown transaction"),
])  # fmt: skip
async def test_odd_stops_are_accepted_and_recorded(body: dict[str, Any], kind: str) -> None:
    out = await run("StopTransaction", body, await opened(MemoryState()))
    assert answer(out) == {}
    assert kind in anomalies(out)
    recorded = [r for r in out.effects.records if isinstance(r, history.Anomaly)]
    assert kind in [r.kind for r in recorded]
    # Odd or not, a stop is billed from history; even one we never saw open.
    [stop] = [r for r in out.effects.records if isinstance(r, history.TransactionStopped)]
    assert stop.transaction_id == body["transactionId"]


async def test_a_second_stop_keeps_the_first() -> None:
    state = await opened(MemoryState())
    state.txns[1].update(meter_stop="1100", stop_timestamp="2024-01-01T11:30:00.000000Z")
    same = await run("StopTransaction", stop_body(), state)
    other = await run("StopTransaction", stop_body(meter=1200), state)
    assert anomalies(same) == [] and not ops(same, "hset_once")
    assert anomalies(other) == ["StopTransaction for a closed transaction"]
    assert not ops(other, "hset_once")


async def test_meter_values_go_to_history_and_latest_is_newest_wins() -> None:
    body = {"connectorId": 2, "transactionId": 1, "meterValue": [
        {"timestamp": "2024-01-01T11:59:00Z",
         "sampledValue": [{"value": "1500"}, {"value": "230.1", "measurand": "Voltage",
                                              "phase": "L1", "unit": "V"}]},
        {"timestamp": "2024-01-01T11:58:00Z", "sampledValue": [{"value": "1400"}]}]}  # fmt: skip
    out = await run("MeterValues", body)
    assert answer(out) == {}
    # Nothing per sample stays in Redis: every sampled value goes to history.
    assert not ops(out, "ZADD")
    # One record a meterValue, its sampled values as OCPP spells them.
    assert out.effects.records == [
        history.MeterReading(CP, 2, 1, "2024-01-01T11:59:00.000000Z",
                             b'[{"value":"1500"},{"value":"230.1","measurand":"Voltage",'
                             b'"phase":"L1","unit":"V"}]'),
        history.MeterReading(CP, 2, 1, "2024-01-01T11:58:00.000000Z", b'[{"value":"1400"}]'),
    ]  # fmt: skip
    [latest] = ops(out, "latest")
    assert latest[1] == keys.meter_latest(CP, 2)
    # Bounds of the readings' times, for the script's fast path: the oldest
    # may be lower than any value kept, the newest is the newest kept.
    assert latest[2:4] == ["2024-01-01T11:58:00.000000Z", "2024-01-01T11:59:00.000000Z"]
    # The older reading of the same measurand in the message does not win.
    assert dict(zip(latest[4::2], latest[5::2], strict=True)) == {
        "Energy.Active.Import.Register": "2024-01-01T11:59:00.000000Z Wh 1500",
        "Voltage:L1": "2024-01-01T11:59:00.000000Z V 230.1",
    }


async def test_a_nul_in_a_sampled_value_reaches_history_replaced() -> None:
    reading = {"timestamp": "2024-01-01T11:59:00Z", "sampledValue": [{"value": "a\u0000b"}]}
    body = {"connectorId": 1, "meterValue": [reading]}
    out = await run("MeterValues", body)
    [record] = out.effects.records
    assert isinstance(record, history.MeterReading)
    assert json.loads(record.sampled_values) == [{"value": "a\ufffdb"}]


async def test_status_notification_is_newest_wins() -> None:
    body = {"connectorId": 0, "errorCode": "NoError", "status": "Available",
            "timestamp": "2024-01-01T11:00:00Z"}  # fmt: skip
    [op] = ops(await run("StatusNotification", body), "hset_newer")
    assert op[1:4] == [keys.connector(CP, 0), "status_timestamp", "2024-01-01T11:00:00.000000Z"]
    assert dict(zip(op[4::2], op[5::2], strict=True))["status"] == "Available"


async def test_a_future_status_timestamp_falls_back_to_receipt_time() -> None:
    body = {"connectorId": 1, "errorCode": "NoError", "status": "Charging",
            "timestamp": "2030-01-01T00:00:00Z"}  # fmt: skip
    out = await run("StatusNotification", body)
    [op] = ops(out, "hset_newer")
    assert op[3] == "2024-01-01T12:00:00.000000Z"  # the envelope's receipt time
    assert anomalies(out) == ["timestamp in the future"]


async def test_data_transfer_goes_to_its_vendor() -> None:
    async def acme(ctx: Context, req: DataTransfer) -> DataTransferResponse:
        return DataTransferResponse(status="Accepted", data=(req.data or "")[::-1])

    body = {"vendorId": "acme", "data": "abc"}
    assert answer(await run("DataTransfer", body)) == {"status": "UnknownVendorId"}
    assert answer(await run("DataTransfer", body, vendors={"acme": acme})) == {
        "status": "Accepted", "data": "cba"}  # fmt: skip


@pytest.mark.parametrize(("action", "payload", "field"), [
    ("DiagnosticsStatusNotification", {"status": "Uploaded"}, "diagnostics_status"),
    ("FirmwareStatusNotification", {"status": "Installed"}, "firmware_status"),
    ("SignedFirmwareStatusNotification", {"status": "Installed", "requestId": 4},
     "signed_firmware_status"),
    ("LogStatusNotification", {"status": "Uploaded", "requestId": 3}, "log_status"),
])  # fmt: skip
async def test_status_notifications_are_recorded(action: str, payload: Any, field: str) -> None:
    out = await run(action, payload)
    assert answer(out) == {}
    [op] = ops(out, "hset_newer")
    assert op[1] == keys.charge_point(CP) and field in op
    [event] = out.effects.records
    assert isinstance(event, history.ChargerEvent) and event.kind == action


async def test_security_events_and_certificates_are_recorded() -> None:
    body = {"type": "FirmwareUpdated", "timestamp": "2024-01-01T11:00:00Z", "techInfo": "v2"}
    out = await run("SecurityEventNotification", body)
    assert answer(out) == {}
    assert out.effects.records == [history.ChargerEvent(
        CP, "SecurityEventNotification", "2024-01-01T11:00:00.000000Z", None,
        {"type": "FirmwareUpdated", "tech_info": "v2"})]  # fmt: skip
    out = await run("SignCertificate", {"csr": "-----BEGIN CERTIFICATE REQUEST-----"})
    assert answer(out) == {"status": "Accepted"}


@pytest.mark.parametrize(("action", "code"), [("Reset", "NotSupported"), ("Fly", "NotImplemented")])
async def test_actions_we_do_not_take_from_chargers(action: str, code: str) -> None:
    out = await run(action, {})
    assert answer(out)[0] == code
    assert not out.effects.ops


def test_every_charger_initiated_operation_has_a_handler() -> None:
    from processor.v16.messages import CHARGER_INITIATED

    assert set(ROUTES) == CHARGER_INITIATED
    assert replace(HandlerConfig(), heartbeat_interval=1).heartbeat_interval == 1
