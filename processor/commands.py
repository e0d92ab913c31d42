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
from typing import Any

import msgspec

from processor import json_depth, keys
from processor.effects import Effects
from processor.envelope import CallError, CallResult
from processor.errors import from_validation, spelled
from processor.protocol_names import OCPP16, OCPP201
from processor.v16 import messages as m
from processor.v201 import messages as m201

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


ResultHandler = Callable[[Effects, str, Any, Any], None]


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
            handler = RESULT_HANDLERS.get(action) if record.protocol == OCPP16 else None
            if handler is not None:
                handler(applied, cp, record.request, response)
    effects.complete_command(record.command_id, cp, now_ms, {"state": state, **fields},
                             applied)  # fmt: skip
    return state


def _get_configuration(e: Effects, cp: str, request: Any, r: m.GetConfigurationResponse) -> None:
    config = {k.key: _encoder.encode(k).decode() for k in r.configuration_key or ()}
    if config:
        e.hset(keys.configuration(cp), config)
    if r.unknown_key:
        e.hset(
            keys.charge_point(cp), {"unknown_configuration_keys": _encoder.encode(r.unknown_key)}
        )


def _change_configuration(
    e: Effects, cp: str, request: Any, r: m.ChangeConfigurationResponse
) -> None:
    if r.status in ("Accepted", "RebootRequired"):
        entry = {"key": request["key"], "value": request["value"], "readonly": False}
        e.hset(keys.configuration(cp), {request["key"]: _encoder.encode(entry)})


def _local_list_version(
    e: Effects, cp: str, request: Any, r: m.GetLocalListVersionResponse
) -> None:
    e.hset(keys.charge_point(cp), {"local_list_version": r.list_version})


def _send_local_list(e: Effects, cp: str, request: Any, r: m.SendLocalListResponse) -> None:
    if r.status == "Accepted":
        e.hset(keys.charge_point(cp), {"local_list_version": request["listVersion"]})


def _installed_certificates(
    e: Effects, cp: str, request: Any, r: m.GetInstalledCertificateIdsResponse
) -> None:
    hashes = _encoder.encode(r.certificate_hash_data or [])
    e.hset(keys.charge_point(cp), {f"certificates:{request['certificateType']}": hashes})


def _diagnostics(e: Effects, cp: str, request: Any, r: m.GetDiagnosticsResponse) -> None:
    if r.file_name:
        e.hset(keys.charge_point(cp), {"diagnostics_file_name": r.file_name})


# Results of 1.6 commands that change what we know of the charger; the rest
# are recorded on the command only.
RESULT_HANDLERS: dict[str, ResultHandler] = {
    "GetConfiguration": _get_configuration,
    "ChangeConfiguration": _change_configuration,
    "GetLocalListVersion": _local_list_version,
    "SendLocalList": _send_local_list,
    "GetInstalledCertificateIds": _installed_certificates,
    "GetDiagnostics": _diagnostics,
}
