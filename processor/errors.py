"""The exceptions the processor raises, each tied to the OCPP-J error code it
becomes when it can be reported to the charger.

    OcppError                      a CALL we can answer with a CALLERROR
    ├── NotImplementedAction         the action is unknown to us
    ├── NotSupportedAction           a known action we do not handle
    ├── ProtocolViolation            envelope and frame disagree, or a reply where a CALL belongs
    │   └── MessageTypeNotSupported    a frame of no message type OCPP-J defines
    ├── FormationViolation           a frame or payload that is not well formed
    │   └── MalformedFrame             the frame itself, not its payload
    ├── PropertyConstraintViolation  a field breaks a constraint (length, enum value)
    ├── OccurrenceConstraintViolation a required field is missing
    ├── TypeConstraintViolation      a field has the wrong type
    ├── SecurityViolation            the charger may not do this (not on the allow-list)
    └── InternalFailure              our side failed for good (retries spent)
    Undeliverable                  input we cannot address to any charger: dead-lettered

``code`` is OCPP-J 1.6's spelling; :func:`spelled` gives each error as the
charger's version spells it (2.0.1: ``FormatViolation``,
``OccurrenceConstraintViolation``, ``MessageTypeNotSupported``,
``RpcFrameworkError``).
"""

from __future__ import annotations

from typing import ClassVar

from processor.protocol_names import OCPP201


class OcppError(Exception):
    """Raised while handling a CALL; becomes a CALLERROR with ``code``."""

    code: ClassVar[str] = "GenericError"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class NotImplementedAction(OcppError):
    """Raised for an action name that is not part of the charger's OCPP version."""

    code = "NotImplemented"


class NotSupportedAction(OcppError):
    """Raised for an action of the charger's OCPP version that this central
    system does not handle (one a central system sends, for instance)."""

    code = "NotSupported"


class ProtocolViolation(OcppError):
    """Raised when the envelope and its frame disagree (message id, type, action)."""

    code = "ProtocolError"


class MessageTypeNotSupported(ProtocolViolation):
    """Raised for a frame whose message type number OCPP-J does not define."""


class FormationViolation(OcppError):
    """Raised for a frame or payload that is syntactically wrong."""

    code = "FormationViolation"


class MalformedFrame(FormationViolation):
    """Raised when the OCPP-J frame itself is wrong (not an array, an id
    that is not a string, elements missing), before any payload is read."""


class PropertyConstraintViolation(OcppError):
    """Raised when a field's value breaks a constraint: length, range, enum."""

    code = "PropertyConstraintViolation"


class OccurrenceConstraintViolation(OcppError):
    """Raised when a required field is missing."""

    # The OCPP-J 1.6 spec's own spelling.
    code = "OccurenceConstraintViolation"


class TypeConstraintViolation(OcppError):
    """Raised when a field has the wrong JSON type."""

    code = "TypeConstraintViolation"


class SecurityViolation(OcppError):
    """Raised when policy forbids this charger the action: under
    ``known-only`` registration, a charger not on the allow-list."""

    code = "SecurityError"


class InternalFailure(OcppError):
    """Raised when handling failed on our side and the retry policy is spent."""

    code = "InternalError"


class Undeliverable(Exception):
    """Raised for input that names no charger or message id we could answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# msgspec's validation messages, first match wins, mapped to the OCPP-J code
# that names the fault. Kept here so one table decides every payload error.
_VALIDATION_CODES: tuple[tuple[str, type[OcppError]], ...] = (
    ("Object missing required field", OccurrenceConstraintViolation),
    ("Object contains unknown field", FormationViolation),
    ("Expected `object`, got", FormationViolation),
    ("of length", PropertyConstraintViolation),
    ("Invalid enum value", PropertyConstraintViolation),
    ("Expected `int` >", PropertyConstraintViolation),
    ("Expected `int` <", PropertyConstraintViolation),
    ("Expected `float` >", PropertyConstraintViolation),
    ("Expected `float` <", PropertyConstraintViolation),
    ("Expected `array` of", PropertyConstraintViolation),
    ("multiple of", PropertyConstraintViolation),
    ("Expected `", TypeConstraintViolation),
    ("Invalid RFC3339", TypeConstraintViolation),
)


def from_validation(action: str, message: str) -> OcppError:
    """The CALLERROR a payload of ``action`` deserves, given msgspec's
    validation message for it."""
    for fragment, kind in _VALIDATION_CODES:
        if fragment in message:
            return kind(f"{action}: {message}")
    return FormationViolation(f"{action}: {message}")


# OCPP-J 2.0.1, section 4.3: the 1.6 codes, two respelled and two new, by
# the kind of error (the most specific kind found first).
_SPELLINGS: dict[str, dict[type[OcppError], str]] = {
    OCPP201: {
        FormationViolation: "FormatViolation",
        OccurrenceConstraintViolation: "OccurrenceConstraintViolation",
        MessageTypeNotSupported: "MessageTypeNotSupported",
        MalformedFrame: "RpcFrameworkError",
    },
}


def spelled(error: OcppError, protocol: str) -> str:
    """``error``'s OCPP-J code as OCPP version ``protocol`` spells it."""
    spellings = _SPELLINGS.get(protocol)
    if spellings:
        for kind in type(error).__mro__:
            code = spellings.get(kind)
            if code is not None:
                return code
    return error.code
