"""Differential test of ``processor.v201.messages`` against the official
OCPP 2.0.1 JSON schemas (shipped in the ``ocpp`` package): for every schema,
valid payloads drawn from it and mutations of them (a field dropped, added,
retyped, too long, out of range, outside its enumeration, a list too long...)
must be accepted or refused alike by our Struct and by ``jsonschema``; and
the generated modules must be what tools/v201_messages.py writes today.

Where the two may rightly disagree, the mutations steer clear and
``test_known_divergences`` pins the behaviour down:

- The schemas are draft-06, which counts 1.0 (any integral float) as an
  integer; we keep to JSON integers, so the float mutations are never
  integral.
- date-time: msgspec's RFC 3339 parser also reads a space for "T" and an
  offset without colon ("+0100"), which rfc3339-validator refuses. The
  malformed date-times drawn here are ones both refuse.
- ``CustomDataType`` is open (no ``additionalProperties: false``): both
  sides accept fields it does not define, but msgspec drops them, so they
  are not encoded again.

The 2.0.1 schemas have no ``multipleOf`` and no format but date-time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from processor.v201.messages import CENTRAL_INITIATED, CHARGER_INITIATED, REQUESTS, RESPONSES
from tests.processor.schema_oracle import SETTINGS as SHARED_SETTINGS
from tests.processor.schema_oracle import Oracle

# Valid payloads with lists up to 3 long; mutants of a payload cost its size
# squared, so the payloads mutated keep their lists to 1.
ORACLE = Oracle("v201", REQUESTS, RESPONSES, drafts={"draft-06"}, longest=3, seed_longest=1)
NAMES = ORACLE.names
GENERATOR = Path(__file__).resolve().parents[2] / "tools" / "v201_messages.py"
case = ORACLE.case

SETTINGS = settings(
    SHARED_SETTINGS,
    max_examples=20,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_every_action_has_both_structs() -> None:
    actions = ORACLE.actions
    assert len(NAMES) == 128
    assert len(actions) == 64
    assert ORACLE.pairs() == {action: (action, f"{action}Response") for action in actions}
    assert actions == CHARGER_INITIATED | CENTRAL_INITIATED
    assert {"DataTransfer"} == CHARGER_INITIATED & CENTRAL_INITIATED
    assert (len(CHARGER_INITIATED), len(CENTRAL_INITIATED)) == (25, 40)


@pytest.mark.parametrize("name", NAMES)
def test_structs_mirror_the_schemas(name: str) -> None:
    ours, theirs = case(name).shapes()
    assert ours == theirs


def test_generated_modules_are_fresh() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


@ORACLE.each_schema(SETTINGS)
def test_valid_payloads_are_accepted_and_encode_back(name: str, data: st.DataObject) -> None:
    c = case(name)
    payload = data.draw(c.valid, label="payload")
    assert c.validator.is_valid(payload)
    decoded, encoded = c.round_trip(payload)
    assert c.validator.is_valid(json.loads(encoded)), encoded
    assert c.decoder.decode(encoded) == decoded


@ORACLE.each_schema(settings(SETTINGS, max_examples=6))
def test_mutated_payloads_are_judged_alike(name: str, data: st.DataObject) -> None:
    c = case(name)
    assert not c.disagreements(data.draw(c.seed, label="payload"))


def _boot(interval: Any) -> dict[str, Any]:
    return {"currentTime": "2024-01-01T12:00:00Z", "interval": interval, "status": "Accepted"}


def _at(timestamp: str) -> dict[str, Any]:
    return {"currentTime": timestamp}


def _custom(**fields: Any) -> dict[str, Any]:
    return {"customData": fields}


@pytest.mark.parametrize(
    ("name", "payload", "schema_accepts", "struct_accepts"),
    [
        ("BootNotificationResponse", _boot(60), True, True),
        ("BootNotificationResponse", _boot(60.0), True, False),
        ("BootNotificationResponse", _boot(1e300), True, False),
        ("BootNotificationResponse", _boot(60.5), False, False),
        ("BootNotificationResponse", _boot(2**70), True, True),
        ("HeartbeatResponse", _at("2024-01-01T12:00:00Z"), True, True),
        ("HeartbeatResponse", _at("2024-01-01t12:00:00z"), True, True),
        ("HeartbeatResponse", _at("2024-01-01 12:00:00Z"), False, True),
        ("HeartbeatResponse", _at("2024-01-01T12:00:00+0100"), False, True),
        ("HeartbeatResponse", _at("2024-01-01T12:00:00+01"), False, False),
        ("HeartbeatResponse", _at("2024-12-31T23:59:60Z"), False, False),
        ("HeartbeatRequest", _custom(vendorId="v", anything=[1, {"a": None}]), True, True),
        ("HeartbeatRequest", _custom(vendorId="v" * 256), False, False),
        ("HeartbeatRequest", _custom(anything=1), False, False),
    ],
)
def test_known_divergences(
    name: str, payload: dict[str, Any], schema_accepts: bool, struct_accepts: bool
) -> None:
    """The divergences the module docstring lists (integral floats,
    date-times, ``CustomDataType``), beside neighbours on which both sides
    agree."""
    assert case(name).verdicts(payload) == (schema_accepts, struct_accepts)


def test_custom_data_drops_fields_it_does_not_define() -> None:
    _, encoded = case("HeartbeatRequest").round_trip(_custom(vendorId="v", extra=1))
    assert json.loads(encoded) == _custom(vendorId="v")
