"""The official OCPP 1.6 JSON schemas (shipped in the ``ocpp`` package) as
cached validators, and the checks every frame a test receives goes through:
:func:`call_result` for a CALLRESULT, :func:`call_error` for a CALLERROR.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ocpp
from jsonschema import Draft4Validator, FormatChecker

SCHEMA_DIR = Path(ocpp.__file__).parent / "v16" / "schemas"
# date-time is checked (rfc3339-validator is installed), as OCPP-J asks.
_FORMATS = FormatChecker()

# OCPP-J 1.6, section 4.2.3, with the spec's own spelling of Occurence.
ERROR_CODES = frozenset(
    {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
    }
)


@functools.cache
def validator(name: str) -> Draft4Validator:
    """The validator of ``<name>.json`` (``Authorize``, ``AuthorizeResponse``...)."""
    path = SCHEMA_DIR / f"{name}.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    return Draft4Validator(schema, format_checker=_FORMATS)


def schema_errors(name: str, payload: Any) -> list[str]:
    """What the official schema ``name`` finds wrong with ``payload``."""
    return sorted(
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator(name).iter_errors(payload)
    )


def assert_valid_request(action: str, payload: Any) -> None:
    errors = schema_errors(action, payload)
    assert not errors, f"test input is not a valid {action}: {errors}"


def assert_invalid_request(action: str, payload: Any) -> None:
    assert schema_errors(action, payload), f"test input is a valid {action}: {payload!r}"


def _reply_envelope(reply: Mapping[str, Any], message_type: int, mid: str, cp: str) -> list[Any]:
    assert reply.get("charge_point_id") == cp, reply
    assert reply.get("message_type") == message_type, reply
    assert reply.get("message_id") == mid, reply
    assert "action" not in reply, reply
    stamp = reply.get("timestamp")
    assert isinstance(stamp, str) and _FORMATS.conforms(stamp, "date-time"), reply
    frame = reply.get("payload")
    assert isinstance(frame, list), reply
    return frame


def call_result(reply: Mapping[str, Any], action: str, mid: str, cp: str) -> dict[str, Any]:
    """The confirmation ``reply`` carries, once checked to be the envelope of
    a CALLRESULT answering ``mid`` from ``cp`` whose payload the official
    ``<action>Response`` schema accepts."""
    frame = _reply_envelope(reply, 3, mid, cp)
    assert len(frame) == 3 and frame[:2] == [3, mid], f"not a CALLRESULT for {mid}: {frame}"
    payload = frame[2]
    errors = schema_errors(f"{action}Response", payload)
    assert not errors, f"{action}Response {payload!r} breaks the official schema: {errors}"
    return dict(payload)


def call_error(reply: Mapping[str, Any], mid: str, cp: str) -> tuple[str, str]:
    """``(code, description)`` of ``reply``, once checked to be the envelope of
    a CALLERROR ``[4, mid, code, description, {}]`` with an OCPP-J error code
    and a description that says something."""
    frame = _reply_envelope(reply, 4, mid, cp)
    assert len(frame) == 5 and frame[:2] == [4, mid], f"not a CALLERROR for {mid}: {frame}"
    _, _, code, description, details = frame
    assert code in ERROR_CODES, frame
    assert isinstance(description, str) and description.strip(), frame
    assert details == {}, frame
    return code, description
