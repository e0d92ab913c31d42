"""The ws-server envelope and the OCPP-J frame it carries, decoded and encoded
with msgspec.

An envelope is a JSON object (CONTRACT.md) whose ``payload`` is the whole
OCPP-J frame. Frames are a tagged union of array-like Structs, so one pass over
the bytes validates the envelope, picks the frame type from its first element
and leaves the OCPP payload undecoded (``msgspec.Raw``) for the action's own
Struct. Decoders and encoders are built once at import.
"""

from __future__ import annotations

from typing import Annotated, Final, NoReturn

import msgspec

from processor.errors import (
    FormationViolation,
    OcppError,
    ProtocolViolation,
    Undeliverable,
)

CALL: Final = 2
CALL_RESULT: Final = 3
CALL_ERROR: Final = 4

# OCPP-J: "maximum of 36 characters, to allow for GUIDs".
MessageId = Annotated[str, msgspec.Meta(max_length=36)]

_EMPTY_OBJECT: Final = msgspec.Raw(b"{}")
# A CALLERROR's description echoes input; keep it readable and bounded.
_MAX_DESCRIPTION = 255


class Call(msgspec.Struct, array_like=True, tag=CALL, forbid_unknown_fields=True, frozen=True):
    """``[2, "<unique id>", "<action>", {payload}]``"""

    unique_id: MessageId
    action: str
    payload: msgspec.Raw


class CallResult(
    msgspec.Struct, array_like=True, tag=CALL_RESULT, forbid_unknown_fields=True, frozen=True
):
    """``[3, "<unique id>", {payload}]``"""

    unique_id: MessageId
    payload: msgspec.Raw


class CallError(
    msgspec.Struct, array_like=True, tag=CALL_ERROR, forbid_unknown_fields=True, frozen=True
):
    """``[4, "<unique id>", "<code>", "<description>", {details}]``"""

    unique_id: MessageId
    error_code: str
    error_description: str
    error_details: msgspec.Raw


Frame = Call | CallResult | CallError


class Envelope(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """One frame as the ws-server hands it over, in both directions.

    Field order is the contract's; unknown fields are ignored on decode and
    ``action`` is omitted on encode when absent.
    """

    charge_point_id: str
    message_type: int
    message_id: str
    action: str | None = None
    payload: Frame
    timestamp: str | None = None


class Rejected(Exception):
    """Raised by :func:`decode` for an envelope that names its charger and
    message id but is otherwise wrong: it deserves a CALLERROR, unless the
    frame was itself a reply (OCPP-J never answers a reply)."""

    def __init__(
        self, error: OcppError, charge_point_id: str, message_id: str, is_reply: bool
    ) -> None:
        super().__init__(error.description)
        self.error = error
        self.charge_point_id = charge_point_id
        self.message_id = message_id
        self.is_reply = is_reply


_decoder: Final = msgspec.json.Decoder(Envelope)
_any_decoder: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()


def decode(raw: bytes, max_bytes: int) -> Envelope:
    """Decode and cross-check one envelope.

    Raises :class:`Rejected` when the charger can be told what was wrong and
    :class:`~processor.errors.Undeliverable` when it cannot. Never raises
    anything else, whatever the bytes.
    """
    if len(raw) > max_bytes:
        _reject(
            raw, FormationViolation(f"envelope is {len(raw)} bytes, over the limit of {max_bytes}")
        )
    try:
        env = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        _reject(raw, _classify(exc))
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise Undeliverable(f"envelope is not valid JSON: {exc}") from None
    frame = env.payload
    problem = None
    if env.message_type != _tag(frame):
        problem = (
            f"envelope message_type {env.message_type} disagrees with frame type {_tag(frame)}"
        )
    elif env.message_id != frame.unique_id:
        problem = (
            f"envelope message_id {env.message_id!r} disagrees with frame id {frame.unique_id!r}"
        )
    elif isinstance(frame, Call) and env.action != frame.action:
        problem = f"envelope action {env.action!r} disagrees with frame action {frame.action!r}"
    if problem is not None:
        raise Rejected(
            ProtocolViolation(problem),
            env.charge_point_id,
            frame.unique_id,
            is_reply=not isinstance(frame, Call) or env.message_type in (CALL_RESULT, CALL_ERROR),
        )
    return env


def _tag(frame: Frame) -> int:
    if isinstance(frame, Call):
        return CALL
    return CALL_RESULT if isinstance(frame, CallResult) else CALL_ERROR


def _classify(exc: msgspec.ValidationError) -> OcppError:
    text = str(exc)
    if text.endswith("`$.payload[0]`"):
        return ProtocolViolation(f"unknown OCPP-J message type: {text}")
    # msgspec reports an over-long array-like frame without a path; the
    # envelope has no other array, so any array fault is the frame's.
    if "`$.payload" in text or text.startswith("Expected `array`"):
        return FormationViolation(f"malformed OCPP-J frame: {text}")
    return ProtocolViolation(f"malformed envelope: {text}")


def _reject(raw: bytes, error: OcppError) -> NoReturn:
    """Find out whom to tell about ``error``; the slow path, for bad input only."""
    try:
        obj = _any_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise Undeliverable(f"{error.description}; and not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Undeliverable(f"envelope is not a JSON object: {error.description}")
    cp = obj.get("charge_point_id")
    if not isinstance(cp, str) or not cp:
        raise Undeliverable(f"envelope has no charge_point_id: {error.description}")
    frame = obj.get("payload")
    frame = frame if isinstance(frame, list) else []
    message_id = obj.get("message_id")
    if not isinstance(message_id, str) and len(frame) > 1 and isinstance(frame[1], str):
        message_id = frame[1]
    if not isinstance(message_id, str) or not message_id:
        raise Undeliverable(f"envelope has no readable message id: {error.description}")
    types = (obj.get("message_type"), frame[0] if frame else None)
    is_reply = any(t in (CALL_RESULT, CALL_ERROR) and type(t) is int for t in types)
    raise Rejected(error, cp, message_id, is_reply)


def encode_result(charge_point_id: str, message_id: str, body: bytes, timestamp: str) -> bytes:
    """The envelope of a CALLRESULT whose payload is the already encoded ``body``."""
    frame = CallResult(message_id, msgspec.Raw(body))
    return _encoder.encode(
        Envelope(
            charge_point_id=charge_point_id,
            message_type=CALL_RESULT,
            message_id=message_id,
            payload=frame,
            timestamp=timestamp,
        )
    )


def encode_error(charge_point_id: str, message_id: str, error: OcppError, timestamp: str) -> bytes:
    """The envelope of a CALLERROR telling the charger what ``error`` says."""
    description = error.description
    if len(description) > _MAX_DESCRIPTION:
        description = description[: _MAX_DESCRIPTION - 3] + "..."
    frame = CallError(message_id, error.code, description, _EMPTY_OBJECT)
    return _encoder.encode(
        Envelope(
            charge_point_id=charge_point_id,
            message_type=CALL_ERROR,
            message_id=message_id,
            payload=frame,
            timestamp=timestamp,
        )
    )


def encode_call(
    charge_point_id: str, message_id: str, action: str, body: bytes, timestamp: str
) -> bytes:
    """The envelope of a CALL we send to a charger."""
    return _encoder.encode(
        Envelope(
            charge_point_id=charge_point_id,
            message_type=CALL,
            message_id=message_id,
            action=action,
            payload=Call(message_id, action, msgspec.Raw(body)),
            timestamp=timestamp,
        )
    )
