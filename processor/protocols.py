"""The OCPP versions the processor speaks, side by side over one pipeline.

Each :class:`Protocol` holds its version's routes (decoder and handler per
action), every action the version defines (to tell an action we do not
handle, NotSupported, from one the version does not have, NotImplemented)
and its spelling of the OCPP-J error codes, which 2.0.1 changed
(:func:`processor.errors.spelled`). An envelope names its charger's version
in ``protocol`` (our gateway sets it); for one without it the dispatcher
reads the charger's registered version, else takes the default
(``OCPP_DEFAULT_PROTOCOL``). A 1.6
and a 2.0.1 message with the same action name are different types: the
route is looked up by version first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from processor import errors
from processor.protocol_names import OCPP16, OCPP201
from processor.routes import Route
from processor.v16 import messages as v16_messages
from processor.v16.handlers import ROUTES as V16_ROUTES
from processor.v201 import messages as v201_messages
from processor.v201.handlers import ROUTES as V201_ROUTES

__all__ = ["ALL", "OCPP16", "OCPP201", "V16", "V201", "Protocol", "Protocols", "protocols"]


@dataclass(frozen=True, slots=True)
class Protocol:
    """One OCPP version: what it routes, what it defines, how it spells errors."""

    name: str
    routes: Mapping[str, Route[Any, Any]]
    actions: frozenset[str]

    def error_code(self, error: errors.OcppError) -> str:
        return errors.spelled(error, self.name)


V16: Final = Protocol(OCPP16, V16_ROUTES, frozenset(v16_messages.REQUESTS))
V201: Final = Protocol(OCPP201, V201_ROUTES, frozenset(v201_messages.REQUESTS))
ALL: Final = {p.name: p for p in (V16, V201)}


@dataclass(frozen=True, slots=True)
class Protocols:
    """The versions a processor speaks and the one assumed for an envelope
    that does not say."""

    by_name: Mapping[str, Protocol]
    default: Protocol

    def of(self, name: str | None) -> Protocol | None:
        """The version an envelope's ``protocol`` names (the default when it
        names none); None for one we do not speak."""
        return self.default if name is None else self.by_name.get(name)


def protocols(default: str = OCPP16) -> Protocols:
    """Every version we speak, ``default`` for envelopes that do not say."""
    return Protocols(ALL, ALL[default])
