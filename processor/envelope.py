"""The ws-server envelope and the OCPP-J frame it carries, decoded and encoded
with msgspec.

An envelope is a JSON object (CONTRACT.md) whose ``payload`` is the whole
OCPP-J frame. Frames are a tagged union of array-like Structs, so one pass over
the bytes validates the envelope, picks the frame type from its first element
and leaves the OCPP payload undecoded (``msgspec.Raw``) for the action's own
Struct. Decoders and encoders are built once at import.
"""

from __future__ import annotations

from typing import Annotated, Final, NoReturn, TypeVar

import msgspec

from processor import json_depth
from processor.errors import (
    FormationViolation,
    MalformedFrame,
    MessageTypeNotSupported,
    OcppError,
    ProtocolViolation,
    Undeliverable,
)

CALL: Final = 2
CALL_RESULT: Final = 3
CALL_ERROR: Final = 4

T = TypeVar("T")

# OCPP-J: "maximum of 36 characters, to allow for GUIDs".
MessageId = Annotated[str, msgspec.Meta(max_length=36)]

_EMPTY_OBJECT: Final = msgspec.Raw(b"{}")
_NULL: Final = msgspec.Raw(b"null")
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
    ``action`` is omitted on encode when absent. ``protocol`` is our
    extension (README, "The contract"): the OCPP version the charger chose
    at its handshake (``ocpp1.6``, ``ocpp2.0.1``), which our gateway sets;
    for a ws-server that does not send it, the processor takes the
    charger's registered version, else its default.
    """

    charge_point_id: str
    message_type: int
    message_id: str
    action: str | None = None
    payload: Frame
    timestamp: str | None = None
    protocol: str | None = None


class Rejected(Exception):
    """Raised by :func:`decode` for an envelope that names its charger and
    message id but is otherwise wrong: it deserves a CALLERROR, unless the
    frame was itself a reply (OCPP-J never answers a reply)."""

    def __init__(
        self,
        error: OcppError,
        charge_point_id: str,
        message_id: str,
        is_reply: bool,
        protocol: str | None = None,
    ) -> None:
        super().__init__(error.description)
        self.error = error
        self.charge_point_id = charge_point_id
        self.message_id = message_id
        self.is_reply = is_reply
        # As the envelope said, if it could be read: the CALLERROR's spelling.
        self.protocol = protocol


_decoder: Final = msgspec.json.Decoder(Envelope)
_encoder: Final = msgspec.json.Encoder()


def decode(raw: bytes, max_bytes: int) -> Envelope:
    """Decode and cross-check one envelope.

    Raises :class:`Rejected` when the charger can be told what was wrong and
    :class:`~processor.errors.Undeliverable` when it cannot. Never raises
    anything else, whatever the bytes: nothing reaches a decoder before its
    size and nesting are known to be bounded.
    """
    if len(raw) > max_bytes:
        _reject(
            raw,
            FormationViolation(f"envelope is {len(raw)} bytes, over the limit of {max_bytes}"),
            max_bytes,
        )
    if not json_depth.within(raw):
        _reject(
            raw,
            FormationViolation(f"JSON nested deeper than {json_depth.MAX_DEPTH} levels"),
            max_bytes,
        )
    try:
        env = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        _reject(raw, _classify(exc), max_bytes)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # Perhaps only the frame is broken and the charger can be told.
        _reject(raw, FormationViolation(f"envelope is not valid JSON: {exc}"), max_bytes)
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
            protocol=env.protocol,
        )
    return env


def _tag(frame: Frame) -> int:
    if isinstance(frame, Call):
        return CALL
    return CALL_RESULT if isinstance(frame, CallResult) else CALL_ERROR


def _classify(exc: msgspec.ValidationError) -> OcppError:
    text = str(exc)
    if text.endswith("`$.payload[0]`"):
        return MessageTypeNotSupported(f"unknown OCPP-J message type: {text}")
    # msgspec reports an over-long array-like frame without a path; the
    # envelope has no other array, so any array fault is the frame's.
    if "`$.payload" in text or text.startswith("Expected `array`"):
        return MalformedFrame(f"malformed OCPP-J frame: {text}")
    return ProtocolViolation(f"malformed envelope: {text}")


class _Head(msgspec.Struct):
    """The fields that say whom to tell, each left as its JSON text: a value
    of the wrong type (or an integer of 50,000 digits) is then simply not
    the answer, rather than a reason to give up on the rest."""

    charge_point_id: msgspec.Raw = _NULL
    message_type: msgspec.Raw = _NULL
    message_id: msgspec.Raw = _NULL
    payload: msgspec.Raw = _NULL
    protocol: msgspec.Raw = _NULL


_head_decoder: Final = msgspec.json.Decoder(_Head)
# Read the fallback for at most this many times the envelope limit: past
# it, finding whom to tell costs more than telling them is worth.
_READ_FACTOR: Final = 16


def _reject(raw: bytes, error: OcppError, max_bytes: int) -> NoReturn:
    """Find out whom to tell about ``error``; the slow path, for bad input only.

    It reads a :func:`~processor.json_depth.shallow` copy in which nothing
    nests below the frame's own elements, so no input can make it recurse.
    """
    if len(raw) > _READ_FACTOR * max_bytes:
        raise Undeliverable(f"{error.description}; too large to read whom to tell")
    try:
        head = _head_decoder.decode(json_depth.shallow(raw, 2))
    except msgspec.ValidationError:
        raise Undeliverable(f"envelope is not a JSON object: {error.description}") from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise Undeliverable(error.description) from None
    cp = _read(head.charge_point_id, str)
    if not cp:
        raise Undeliverable(f"envelope has no charge_point_id: {error.description}")
    frame = _read(head.payload, list[msgspec.Raw]) or []
    message_id = _read(head.message_id, str)
    if message_id is None and len(frame) > 1:
        message_id = _read(frame[1], str)
    if not message_id:
        raise Undeliverable(f"envelope has no readable message id: {error.description}")
    types = (_read(head.message_type, int), _read(frame[0], int) if frame else None)
    is_reply = any(t in (CALL_RESULT, CALL_ERROR) for t in types)
    raise Rejected(error, cp, message_id, is_reply, _read(head.protocol, str))


def _read(value: msgspec.Raw, kind: type[T]) -> T | None:
    """``value`` as a ``kind``, or None if it is not one."""
    try:
        return msgspec.json.decode(value, type=kind)
    except msgspec.DecodeError:
        return None


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


def encode_error(
    charge_point_id: str, message_id: str, error: OcppError, timestamp: str, code: str = ""
) -> bytes:
    """The envelope of a CALLERROR telling the charger what ``error`` says,
    as ``code`` (the charger's version's spelling; ``error.code`` if empty)."""
    description = error.description
    if len(description) > _MAX_DESCRIPTION:
        description = description[: _MAX_DESCRIPTION - 3] + "..."
    frame = CallError(message_id, code or error.code, description, _EMPTY_OBJECT)
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
