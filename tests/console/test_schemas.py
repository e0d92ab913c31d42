"""Every command's form schema: built from the request type the processor
validates against, in the shape @json-editor/json-editor reads."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from adapters.console import schemas
from processor.commands import COMMANDS, CommandRejected, validate_request


def nodes(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(n for v in node.values() for n in nodes(v))]
    if isinstance(node, list):
        return [n for v in node for n in nodes(v)]
    return []


@pytest.mark.parametrize(
    ("protocol", "action"), [(p, a) for p, actions in COMMANDS.items() for a in sorted(actions)]
)
def test_every_command_has_a_form_schema(protocol: str, action: str) -> None:
    schema = schemas.request_schema(protocol, action)
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["type"] == "object" and schema["title"] == action
    every = nodes(schema)
    assert not any("$defs" in n or n.get("default", 0) is None for n in every)
    assert not any(n.get("format") == "date-time" for n in every)
    # Enums carry a type, or the editor offers to switch types.
    assert all("type" in n for n in every if "enum" in n)


def test_a_value_the_form_accepts_the_processor_accepts() -> None:
    schema = schemas.request_schema("ocpp2.0.1", "RequestStartTransaction")
    body = {"idToken": {"idToken": "TAG", "type": "Central"}, "remoteStartId": 1}
    jsonschema.validate(body, schema)
    validate_request("RequestStartTransaction", b'{"idToken": {"idToken": "TAG", "type": '
                     b'"Central"}, "remoteStartId": 1}', "ocpp2.0.1")  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"remoteStartId": 1}, schema)
    with pytest.raises(CommandRejected):
        validate_request("RequestStartTransaction", b'{"remoteStartId": 1}', "ocpp2.0.1")


def test_unknown_or_other_version_commands_have_none() -> None:
    assert "RemoteStartTransaction" in schemas.actions("ocpp1.6")
    assert "RequestStartTransaction" in schemas.actions("ocpp2.0.1")
    with pytest.raises(KeyError):
        schemas.request_schema("ocpp2.0.1", "RemoteStartTransaction")
    with pytest.raises(KeyError):
        schemas.request_schema("ocpp1.6", "FooBar")
