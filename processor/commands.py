"""Commands: the CALLs the central system sends to chargers, the pure part.

Validating a command's request, and turning the charger's reply into the
writes that complete it: the outcome on the command's record and the
effects some results have (GetConfiguration stores the configuration, and
so on). ``processor/command_queue.py`` queues and sends them; the commit
applies what this module decides, only if the command was still waiting for
this reply (``complete_command`` in ``processor/lua/commit.lua``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from processor import clock, json_depth, keys
from processor.effects import Effects
from processor.envelope import CallError, CallResult
from processor.errors import from_validation, spelled
from processor.protocol_names import OCPP16, OCPP201
from processor.v16 import messages as m
from processor.v201 import messages as m201
from processor.v201.device_model import REPORT_TTL_S, Attribute, record_value

_encoder = msgspec.json.Encoder()
# What each version's central system sends, by (version, action).
_VERSIONS = ((OCPP16, m), (OCPP201, m201))
_requests = {
    (v, a): msgspec.json.Decoder(ms.REQUESTS[a])
    for v, ms in _VERSIONS
    for a in ms.CENTRAL_INITIATED
}
_responses = {
    (v, a): msgspec.json.Decoder(ms.RESPONSES[a])
    for v, ms in _VERSIONS
    for a in ms.CENTRAL_INITIATED
}
COMMANDS = {v: frozenset(ms.CENTRAL_INITIATED) for v, ms in _VERSIONS}
TERMINAL = frozenset({"answered", "failed", "timed_out"})
_set_variables_request = msgspec.json.Decoder(m201.SetVariables)


class CommandRejected(ValueError):
    """Raised for a command we will not send: unknown action, bad payload."""


def validate_request(action: str, body: bytes, protocol: str = OCPP16) -> bytes:
    """The canonical JSON of a valid ``action`` request of OCPP version
    ``protocol`` (the charger's), or CommandRejected."""
    decoder = _requests.get((protocol, action))
    if decoder is None:
        others = [v for v, actions in COMMANDS.items() if v != protocol and action in actions]
        if others:
            raise CommandRejected(
                f"{action} is an {' and '.join(others)} command; the charger speaks {protocol}"
            )
        raise CommandRejected(f"{action} is not a command the central system sends ({protocol})")
    if not json_depth.within(body):
        raise CommandRejected(f"{action} request nests deeper than {json_depth.MAX_DEPTH} levels")
    try:
        request = decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise CommandRejected(f"invalid {action} request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise CommandRejected(f"{action} request is not valid JSON: {exc}") from None
    return _encoder.encode(request)


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A command as ``ocpp:cmd:{id}`` holds it."""

    command_id: str
    charge_point_id: str
    action: str
    state: str
    fields: dict[str, str]

    @classmethod
    def from_hash(cls, command_id: str, fields: dict[str, str]) -> CommandRecord | None:
        if "action" not in fields:
            return None
        return cls(command_id, fields["charge_point_id"], fields["action"],
                   fields.get("state", ""), fields)  # fmt: skip

    @property
    def request(self) -> Any:
        return msgspec.json.decode(self.fields.get("request", "null"))

    @property
    def protocol(self) -> str:
        """The charger's OCPP version when the command was sent; commands
        recorded before versions were (all 1.6) say none."""
        return self.fields.get("protocol") or OCPP16


# (effects, the command, its decoded response): what the result changes.
ResultHandler = Callable[[Effects, "CommandRecord", Any, int], None]


def reply_effects(
    effects: Effects, record: CommandRecord, frame: CallResult | CallError, now_ms: int
) -> str:
    """Record the reply to ``record`` on ``effects``; returns the outcome
    (``answered`` or ``failed``). A confirmation that breaks its schema
    fails the command with the OCPP error code it deserves."""
    cp, action = record.charge_point_id, record.action
    applied = Effects()
    if isinstance(frame, CallError):
        state = "failed"
        fields = {"error_code": frame.error_code, "error_description": frame.error_description}
    else:
        # Kept for the operator as it came, bytes that are not UTF-8 included.
        raw = bytes(frame.payload).decode(errors="replace")
        try:
            response = _responses[(record.protocol, action)].decode(frame.payload)
        except (KeyError, msgspec.DecodeError) as exc:
            error = from_validation(f"{action} confirmation", str(exc))
            state = "failed"
            # Spelled as the charger's version spells it.
            code = spelled(error, record.protocol)
            fields = {"error_code": code, "error_description": error.description,
                      "result": raw}  # fmt: skip
        else:
            state = "answered"
            fields = {"result": raw}
            status = getattr(response, "status", None)
            if isinstance(status, str):
                fields["status"] = status
            handler = RESULT_HANDLERS.get((record.protocol, action))
            if handler is not None:
                handler(applied, record, response, now_ms)
    effects.complete_command(record.command_id, cp, now_ms, {"state": state, **fields},
                             applied)  # fmt: skip
    # What the result told is history even when the reply came too late to
    # be applied: the station did answer it.
    effects.records.extend(applied.records)
    return state


def _get_configuration(
    e: Effects, c: CommandRecord, r: m.GetConfigurationResponse, now_ms: int
) -> None:
    cp = c.charge_point_id
    config = {k.key: _encoder.encode(k).decode() for k in r.configuration_key or ()}
    if config:
        e.hset(keys.configuration(cp), config)
    if r.unknown_key:
        e.hset(
            keys.charge_point(cp), {"unknown_configuration_keys": _encoder.encode(r.unknown_key)}
        )


def _change_configuration(
    e: Effects, c: CommandRecord, r: m.ChangeConfigurationResponse, now_ms: int
) -> None:
    cp, request = c.charge_point_id, c.request
    if r.status in ("Accepted", "RebootRequired"):
        entry = {"key": request["key"], "value": request["value"], "readonly": False}
        e.hset(keys.configuration(cp), {request["key"]: _encoder.encode(entry)})


def _local_list_version(
    e: Effects, c: CommandRecord, r: m.GetLocalListVersionResponse, now_ms: int
) -> None:
    e.hset(keys.charge_point(c.charge_point_id), {"local_list_version": r.list_version})


def _send_local_list(e: Effects, c: CommandRecord, r: m.SendLocalListResponse, now_ms: int) -> None:
    if r.status == "Accepted":
        version = c.request["listVersion"]
        e.hset(keys.charge_point(c.charge_point_id), {"local_list_version": version})


def _installed_certificates(
    e: Effects, c: CommandRecord, r: m.GetInstalledCertificateIdsResponse, now_ms: int
) -> None:
    hashes = _encoder.encode(r.certificate_hash_data or [])
    kind = c.request["certificateType"]
    e.hset(keys.charge_point(c.charge_point_id), {f"certificates:{kind}": hashes})


def _diagnostics(e: Effects, c: CommandRecord, r: m.GetDiagnosticsResponse, now_ms: int) -> None:
    if r.file_name:
        e.hset(keys.charge_point(c.charge_point_id), {"diagnostics_file_name": r.file_name})


def _get_variables(e: Effects, c: CommandRecord, r: m201.GetVariablesResponse, now_ms: int) -> None:
    """Every value the station gave: the device model's current value."""
    at = clock.stored(datetime.fromtimestamp(now_ms / 1000, UTC))
    for n, got in enumerate(r.get_variable_result):
        if got.attribute_status == "Accepted" and got.attribute_value is not None:
            key = Attribute.of(got.component, got.variable, got.attribute_type)
            record_value(e, c.charge_point_id, key, got.attribute_value, "GetVariables",
                         f"command:{c.command_id}", n, at)  # fmt: skip


def _set_variables(e: Effects, c: CommandRecord, r: m201.SetVariablesResponse, now_ms: int) -> None:
    """Every value the station accepted (RebootRequired too: it is set, to
    take effect after a reboot) becomes the current value, as requested."""
    asked = _set_variables_request.decode(c.fields.get("request", "{}"))
    wanted = {
        Attribute.of(d.component, d.variable, d.attribute_type): d.attribute_value
        for d in asked.set_variable_data
    }
    at = clock.stored(datetime.fromtimestamp(now_ms / 1000, UTC))
    for n, done in enumerate(r.set_variable_result):
        key = Attribute.of(done.component, done.variable, done.attribute_type)
        value = wanted.get(key)
        if done.attribute_status in ("Accepted", "RebootRequired") and value is not None:
            record_value(e, c.charge_point_id, key, value, "SetVariables",
                         f"command:{c.command_id}", n, at)  # fmt: skip


def _local_list_version_201(
    e: Effects, c: CommandRecord, r: m201.GetLocalListVersionResponse, now_ms: int
) -> None:
    e.hset(keys.charge_point(c.charge_point_id), {"local_list_version": r.version_number})


def _send_local_list_201(
    e: Effects, c: CommandRecord, r: m201.SendLocalListResponse, now_ms: int
) -> None:
    if r.status == "Accepted":
        version = c.request["versionNumber"]
        e.hset(keys.charge_point(c.charge_point_id), {"local_list_version": version})


def _report_asked(
    e: Effects, c: CommandRecord, r: m201.GetBaseReportResponse | m201.GetReportResponse,
    now_ms: int,
) -> None:  # fmt: skip
    """A report the station will send in NotifyReport parts, or refused."""
    key = keys.report(c.charge_point_id, c.request["requestId"])
    # A requestId used before names a new report: the old one's parts go.
    e.call("DEL", key)
    e.hset(key, {"command_id": c.command_id, "action": c.action, "status": r.status,
                 "asked_at": clock.stored(datetime.fromtimestamp(now_ms / 1000, UTC))})  # fmt: skip
    e.call("EXPIRE", key, REPORT_TTL_S)


# Results that change what we know of the charger, by (version, action);
# the rest are recorded on the command only.
RESULT_HANDLERS: dict[tuple[str, str], ResultHandler] = {
    (OCPP16, "GetConfiguration"): _get_configuration,
    (OCPP16, "ChangeConfiguration"): _change_configuration,
    (OCPP16, "GetLocalListVersion"): _local_list_version,
    (OCPP16, "SendLocalList"): _send_local_list,
    (OCPP16, "GetInstalledCertificateIds"): _installed_certificates,
    (OCPP16, "GetDiagnostics"): _diagnostics,
    (OCPP201, "GetVariables"): _get_variables,
    (OCPP201, "SetVariables"): _set_variables,
    (OCPP201, "GetLocalListVersion"): _local_list_version_201,
    (OCPP201, "SendLocalList"): _send_local_list_201,
    (OCPP201, "GetBaseReport"): _report_asked,
    (OCPP201, "GetReport"): _report_asked,
}
