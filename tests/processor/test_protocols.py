"""Each message answered in its charger's OCPP version: routes keyed by
version and action, and each version's spelling of the OCPP-J error codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from processor import history, keys
from processor.commands import CommandRecord, reply_effects
from processor.dispatch import Delivery, Dispatcher, Limits
from processor.effects import Effects
from processor.envelope import CallResult
from processor.protocols import OCPP16, OCPP201, protocols
from processor.types import HandlerConfig
from tests.messages import call
from tests.processor.memory_state import MemoryState

pytestmark = pytest.mark.anyio

NOW = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)


async def reply(raw: bytes, default: str = OCPP16) -> list[Any]:
    d = Dispatcher(protocols(default), MemoryState(), HandlerConfig(), Limits())
    [out] = await d.handle_batch([Delivery(b"1-0", raw)], NOW)
    frame: list[Any] = json.loads(out.reply)["payload"]
    return frame


def envelope(frame: Any, protocol: str | None) -> bytes:
    """``frame``'s envelope, as a gateway makes it of whatever it holds."""
    action = frame[2] if len(frame) > 2 and isinstance(frame[2], str) else "Heartbeat"
    env: dict[str, Any] = {"charge_point_id": "CP1", "message_type": 2, "message_id": "m1",
                           "action": action, "payload": frame}  # fmt: skip
    if protocol is not None:
        env["protocol"] = protocol
    return json.dumps(env).encode()


@pytest.mark.parametrize(
    ("protocol", "action", "code"),
    [
        # A central system's own action, sent by a charger.
        (OCPP16, "RemoteStartTransaction", "NotSupported"),
        (OCPP201, "RequestStartTransaction", "NotSupported"),
        # The other version's action: this one has no such thing.
        (OCPP16, "RequestStartTransaction", "NotImplemented"),
        (OCPP201, "RemoteStartTransaction", "NotImplemented"),
        (OCPP201, "StartTransaction", "NotImplemented"),
        (OCPP16, "TransactionEvent", "NotImplemented"),
    ],
)
async def test_actions_are_looked_up_in_the_chargers_version(
    protocol: str, action: str, code: str
) -> None:
    frame = await reply(call("CP1", "m1", action, {}, protocol))
    assert frame[:3] == [4, "m1", code]
    assert protocol in frame[3]


# (frame, 1.6's code, 2.0.1's code): 2.0.1 respelled two and added two.
SPELLINGS = [
    ([2, "m1", "Heartbeat", {"unknownField": 1}], "FormationViolation", "FormatViolation"),
    ([2, "m1", "Authorize", {}], "OccurenceConstraintViolation", "OccurrenceConstraintViolation"),
    ([2, "m1", "Heartbeat", []], "FormationViolation", "FormatViolation"),
    ([5, "m1", "Heartbeat", {}], "ProtocolError", "MessageTypeNotSupported"),
    ([2, "m1", "Heartbeat"], "FormationViolation", "RpcFrameworkError"),
    ([2, "m1", 7, {}], "FormationViolation", "RpcFrameworkError"),
]


@pytest.mark.parametrize(("frame", "v16", "v201"), SPELLINGS)
async def test_each_version_spells_its_error_codes(frame: Any, v16: str, v201: str) -> None:
    assert (await reply(envelope(frame, OCPP16)))[:3] == [4, "m1", v16]
    assert (await reply(envelope(frame, OCPP201)))[:3] == [4, "m1", v201]


async def test_an_envelope_without_protocol_is_read_as_the_default() -> None:
    frame = [2, "m1", "Authorize", {}]
    assert (await reply(envelope(frame, None)))[2] == "OccurenceConstraintViolation"
    answer = await reply(envelope(frame, None), default=OCPP201)
    assert answer[2] == "OccurrenceConstraintViolation"


async def test_a_version_we_do_not_speak_is_a_protocol_error() -> None:
    frame = await reply(call("CP1", "m1", "Heartbeat", {}, "ocpp2.1"))
    assert frame[:3] == [4, "m1", "ProtocolError"]
    assert "'ocpp2.1'" in frame[3]


async def test_the_same_action_is_a_different_type_in_each_version() -> None:
    v16_boot = {"chargePointVendor": "Acme", "chargePointModel": "M1"}
    v201_boot = {"chargingStation": {"vendorName": "Acme", "model": "M1"}, "reason": "PowerUp"}
    assert (await reply(call("CP1", "m1", "BootNotification", v16_boot, OCPP16)))[0] == 3
    assert (await reply(call("CP1", "m1", "BootNotification", v201_boot, OCPP201)))[0] == 3
    # Each other's fields are unknown ones, each version's word for that.
    wrong = await reply(call("CP1", "m1", "BootNotification", v16_boot, OCPP201))
    assert wrong[:3] == [4, "m1", "FormatViolation"]
    wrong = await reply(call("CP1", "m1", "BootNotification", v201_boot, OCPP16))
    assert wrong[:3] == [4, "m1", "FormationViolation"]


@pytest.mark.parametrize(
    ("protocol", "action", "reply", "state", "code"),
    [
        (OCPP201, "Reset", {"status": "Scheduled"}, "answered", None),
        (OCPP201, "Reset", {}, "failed", "OccurrenceConstraintViolation"),
        (OCPP16, "Reset", {}, "failed", "OccurenceConstraintViolation"),
        # 1.6's Reset answers no "Scheduled".
        (OCPP16, "Reset", {"status": "Scheduled"}, "failed", "PropertyConstraintViolation"),
        (OCPP201, "RequestStartTransaction", {"status": "Accepted", "transactionId": "T"},
         "answered", None),
    ],
)  # fmt: skip
def test_a_commands_reply_is_read_in_the_version_it_was_sent_in(
    protocol: str, action: str, reply: Any, state: str, code: str | None
) -> None:
    record = CommandRecord("c1", "CP1", action, "sent", {"action": action, "protocol": protocol,
                                                          "charge_point_id": "CP1"})  # fmt: skip
    effects = Effects()
    frame = CallResult("c1", msgspec.Raw(json.dumps(reply).encode()))
    assert reply_effects(effects, record, frame, 0) == state
    [op] = effects.ops
    fields = dict(zip(op[4][::2], op[4][1::2], strict=True))
    assert fields.get("error_code") == code


def completed(action: str, request: Any, reply: Any) -> list[list[Any]]:
    """The writes a 2.0.1 command's result applies (complete_command's ops);
    its history records must say the same values."""
    fields = {"action": action, "protocol": OCPP201, "charge_point_id": "CS1",
              "request": json.dumps(request)}  # fmt: skip
    record = CommandRecord("c9", "CS1", action, "sent", fields)
    effects = Effects()
    frame = CallResult("c9", msgspec.Raw(json.dumps(reply).encode()))
    assert reply_effects(effects, record, frame, 1_704_110_400_000) == "answered"
    [op] = effects.ops
    applied: list[list[Any]] = op[5]
    told = [(r.value, r.origin) for r in effects.records if isinstance(r, history.VariableReported)]
    assert told == [(o[5], "command:c9") for o in applied if o[1] == keys.variables("CS1")]
    return applied


HEARTBEAT = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
FIELD = '["OCPPCommCtrlr","",null,null,"HeartbeatInterval","","Actual"]'


def test_get_variables_results_become_current_values() -> None:
    reply = {"getVariableResult": [
        {"attributeStatus": "Accepted", "attributeValue": "120", **HEARTBEAT},
        {"attributeStatus": "UnknownVariable", "component": {"name": "X"},
         "variable": {"name": "Y"}},
    ]}  # fmt: skip
    applied = completed("GetVariables", {"getVariableData": [HEARTBEAT]}, reply)
    assert applied == [["newest_fields", keys.variables("CS1"), keys.variable_times("CS1"),
                        "2024-01-01T12:00:00.000000Z", FIELD, "120"]]  # fmt: skip


@pytest.mark.parametrize(("status", "kept"), [("Accepted", True), ("RebootRequired", True),
                                               ("Rejected", False)])  # fmt: skip
def test_set_variables_keeps_what_the_station_accepted(status: str, kept: bool) -> None:
    request = {"setVariableData": [{"attributeValue": "60", **HEARTBEAT}]}
    applied = completed(
        "SetVariables", request, {"setVariableResult": [{"attributeStatus": status, **HEARTBEAT}]}
    )
    assert applied == ([["newest_fields", keys.variables("CS1"), keys.variable_times("CS1"),
                         "2024-01-01T12:00:00.000000Z", FIELD, "60"]] if kept else [])  # fmt: skip


def test_a_report_asked_for_is_recorded_with_the_stations_answer() -> None:
    applied = completed("GetBaseReport", {"requestId": 11, "reportBase": "FullInventory"},
                        {"status": "Accepted"})  # fmt: skip
    delete, hset, expire = applied
    # A requestId used before names a new report: the old one's parts go.
    assert delete == ["call", "DEL", keys.report("CS1", 11)]
    assert hset[:3] == ["call", "HSET", keys.report("CS1", 11)]
    assert dict(zip(hset[3::2], hset[4::2], strict=True)) == {
        "command_id": "c9", "action": "GetBaseReport", "status": "Accepted",
        "asked_at": "2024-01-01T12:00:00.000000Z"}  # fmt: skip
    assert expire[:3] == ["call", "EXPIRE", keys.report("CS1", 11)]


async def test_an_envelope_without_protocol_is_read_in_the_chargers_registered_version() -> None:
    """A ws-server without our extension: the version the charger booted
    with, or an operator set, else the default; read once, then remembered."""

    class Counting(MemoryState):
        reads = 0

        async def charger_protocol(self, charge_point_id: str) -> str | None:
            Counting.reads += 1
            return await super().charger_protocol(charge_point_id)

    state = Counting()
    state.protocols["CS-NEW"] = OCPP201
    d = Dispatcher(protocols(), state, HandlerConfig(), Limits())
    v201_boot = {"chargingStation": {"vendorName": "Acme", "model": "M1"}, "reason": "PowerUp"}
    v16_boot = {"chargePointVendor": "Acme", "chargePointModel": "M1"}
    outs = await d.handle_batch([
        Delivery(b"1-0", call("CS-NEW", "m1", "BootNotification", v201_boot)),
        Delivery(b"2-0", call("CP-OLD", "m2", "BootNotification", v16_boot)),
        Delivery(b"3-0", call("CS-NEW", "m3", "Authorize", {})),
    ], NOW)  # fmt: skip
    frames = [json.loads(o.reply)["payload"] for o in outs]
    assert [f[0] for f in frames[:2]] == [3, 3]
    assert frames[2][2] == "OccurrenceConstraintViolation"  # 2.0.1's spelling
    assert Counting.reads == 2  # once per charger
    await d.handle_batch([Delivery(b"4-0", call("CS-NEW", "m4", "Heartbeat", {}))], NOW)
    assert Counting.reads == 2


# OCPP-J 2.0.1's codes (section 4.3), each with a 2.0.1 envelope that
# deserves it. GenericError is left out: nothing here is without a more
# precise code.
BOOT = {"chargingStation": {"vendorName": "Acme", "model": "M1"}, "reason": "PowerUp"}
V201_FAULTS = [
    ("FormatViolation", [2, "m1", "Heartbeat", {"extra": 1}], {}),
    ("OccurrenceConstraintViolation", [2, "m1", "Authorize", {}], {}),
    ("PropertyConstraintViolation", [2, "m1", "BootNotification", {**BOOT, "reason": "Bored"}],
     {}),
    ("PropertyConstraintViolation",
     [2, "m1", "Authorize", {"idToken": {"idToken": "x" * 37, "type": "Central"}}], {}),
    ("TypeConstraintViolation", [2, "m1", "StatusNotification", {
        "timestamp": "2024-01-01T00:00:00Z", "connectorStatus": "Available", "evseId": "one",
        "connectorId": 1}], {}),
    ("NotImplemented", [2, "m1", "StartTransaction", {}], {}),
    ("NotSupported", [2, "m1", "RequestStartTransaction", {}], {}),
    # The envelope says Authorize, its frame Heartbeat.
    ("ProtocolError", [2, "m1", "Heartbeat", {}], {"action": "Authorize"}),
    ("MessageTypeNotSupported", [6, "m1", "Heartbeat", {}], {}),
    ("RpcFrameworkError", [2, "m1"], {}),
    ("SecurityError", [2, "m1", "Authorize", {"idToken": {"idToken": "T", "type": "Central"}}],
     {"registration_policy": "known-only"}),
]  # fmt: skip


@pytest.mark.parametrize(("code", "frame", "config"), V201_FAULTS)
async def test_every_201_error_code_is_provoked_by_what_deserves_it(
    code: str, frame: Any, config: dict[str, Any]
) -> None:
    raw = envelope(frame, OCPP201)
    config = dict(config)
    if "action" in config:
        raw = raw.replace(b'"action": "Heartbeat"', f'"action": "{config.pop("action")}"'.encode())
    d = Dispatcher(protocols(), MemoryState(), HandlerConfig(**config), Limits())
    [out] = await d.handle_batch([Delivery(b"1-0", raw)], NOW)
    assert json.loads(out.reply)["payload"][:3] == [4, "m1", code]


async def test_201_internal_error_when_a_message_cannot_be_processed() -> None:
    d = Dispatcher(protocols(), MemoryState(), HandlerConfig(), Limits(max_deliveries=2))
    raw = envelope([2, "m1", "Heartbeat", {}], OCPP201)
    [out] = await d.handle_batch([Delivery(b"1-0", raw, deliveries=3)], NOW)
    assert json.loads(out.reply)["payload"][:3] == [4, "m1", "InternalError"]


def test_a_201_local_list_version_is_kept_as_16s() -> None:
    applied = completed("GetLocalListVersion", {}, {"versionNumber": 7})
    assert applied == [["call", "HSET", keys.charge_point("CS1"), "local_list_version", "7"]]
    applied = completed("SendLocalList", {"versionNumber": 8, "updateType": "Full"},
                        {"status": "Accepted"})  # fmt: skip
    assert applied == [["call", "HSET", keys.charge_point("CS1"), "local_list_version", "8"]]


async def test_a_registered_201_station_behind_a_plain_ws_server_is_told_in_201s_words() -> None:
    """Its version read once, even a frame too broken to route gets 2.0.1's code."""
    state = MemoryState()
    state.protocols["CS-REG"] = OCPP201
    d = Dispatcher(protocols(), state, HandlerConfig(), Limits())
    await d.handle_batch([Delivery(b"1-0", call("CS-REG", "m0", "Heartbeat", {}))], NOW)
    broken = envelope([2, "m1", "Heartbeat"], None).replace(b'"CP1"', b'"CS-REG"')
    [out] = await d.handle_batch([Delivery(b"2-0", broken)], NOW)
    assert json.loads(out.reply)["payload"][:3] == [4, "m1", "RpcFrameworkError"]
