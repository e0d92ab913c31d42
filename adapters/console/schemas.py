"""The JSON Schema of every command's request, for the console's forms.

Generated from the Structs the processor validates a command against
(``processor/commands.py``), so a form asks for exactly what will be
accepted, then adapted to what @json-editor/json-editor reads: the root
is the request object itself, its types under ``definitions``, and the
``"default": null`` msgspec gives optional fields dropped (the editor would
fill them with null, which the request's types refuse), and enums typed
(or the editor offers a type switcher). Date-times are
asked as RFC 3339 text: the browser's datetime-local input has no zone.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from processor.commands import COMMANDS
from processor.protocol_names import OCPP16, OCPP201
from processor.v16 import messages as m16
from processor.v201 import messages as m201

_MESSAGES = {OCPP16: m16, OCPP201: m201}
_TIME_HINT = "RFC 3339 with a zone, e.g. 2030-01-01T12:00:00Z"


def actions(protocol: str) -> list[str]:
    """The commands a charger of ``protocol`` takes, sorted."""
    return sorted(COMMANDS.get(protocol, ()))


def _adapt(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _adapt(val) for k, val in node.items() if not (k == "default" and val is None)}
        if "enum" in out and "type" not in out:
            # Else the editor offers a type switcher (string, number, ...).
            kinds = {type(x) for x in out["enum"]}
            out["type"] = {str: "string", int: "integer", bool: "boolean"}.get(
                kinds.pop() if len(kinds) == 1 else object, "string"
            )
        if out.get("format") == "date-time":
            del out["format"]
            out["description"] = (out.get("description", "") + " " + _TIME_HINT).strip()
        return out
    if isinstance(node, list):
        return [_adapt(x) for x in node]
    return node


@cache
def request_schema(protocol: str, action: str) -> dict[str, Any]:
    """The form's schema for ``action`` of ``protocol``; KeyError for an
    action that version's central system does not send."""
    if action not in COMMANDS.get(protocol, ()):
        raise KeyError(action)
    request = _MESSAGES[protocol].REQUESTS[action]
    raw = msgspec.json.schema(request, ref_template="#/definitions/{name}")
    definitions = raw.get("$defs", {})
    name = raw["$ref"].rsplit("/", 1)[1]
    root = dict(definitions[name])
    root["title"] = action
    root["definitions"] = definitions
    adapted: dict[str, Any] = _adapt(root)
    return adapted
