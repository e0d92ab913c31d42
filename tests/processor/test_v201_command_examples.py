"""The 2.0.1 command examples the end-to-end test sends are what the
official schemas and our Structs both take: one for each of the 40."""

from __future__ import annotations

import json

import pytest

from processor.commands import COMMANDS
from processor.protocol_names import OCPP201
from tests.processor.test_schemas_v201 import ORACLE
from tests.v201_commands import EXAMPLES


def test_there_is_an_example_of_every_command() -> None:
    assert set(EXAMPLES) == COMMANDS[OCPP201]
    assert len(EXAMPLES) == 40


@pytest.mark.parametrize("action", sorted(EXAMPLES))
def test_each_example_is_valid_both_ways(action: str) -> None:
    for name, payload in zip(("Request", "Response"), EXAMPLES[action], strict=True):
        case = ORACLE.case(f"{action}{name}")
        case.validator.validate(payload)
        case.decoder.decode(json.dumps(payload))
