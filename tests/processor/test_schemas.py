"""Differential test of ``processor.v16.messages`` against the official OCPP 1.6
JSON schemas (shipped in the ``ocpp`` package): for every schema, valid
payloads drawn from it and mutations of them (a field dropped, added,
retyped, too long, outside its enumeration...) must be accepted or refused
alike by our Struct and by ``jsonschema``.

Where the two may rightly disagree, the generator steers clear and
``test_known_divergences`` pins the behaviour down:

- ``multipleOf: 0.1``: validators divide floats, so they refuse 0.3
  (0.3 / 0.1 is 2.9999999999999996); we also accept one-decimal values.
- Draft-06 schemas (the security extension) count 1.0 as an integer; we
  keep to JSON integers, so the float mutations there are never integral.
- date-time: msgspec's RFC 3339 parser also reads a space for "T" and an
  offset without colon ("+0100"), which rfc3339-validator refuses. The
  malformed date-times drawn here are ones both refuse.
- "format": "uri" is checked by neither (the oracle checks date-time only).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st

from processor.v16.messages import CENTRAL_INITIATED, CHARGER_INITIATED, REQUESTS, RESPONSES
from tests.processor.schema_oracle import SETTINGS, Oracle

# Draft-04 and, in the security extension, draft-06.
ORACLE = Oracle(
    "v16", REQUESTS, RESPONSES, drafts={"draft-04", "draft-06"}, longest=2, seed_longest=2
)
NAMES = ORACLE.names
case = ORACLE.case  # test_dispatch draws its payloads here too, under SETTINGS


def test_every_operation_has_both_structs() -> None:
    actions = ORACLE.actions
    assert len(actions) == 39
    assert ORACLE.pairs() == {action: (action, f"{action}Response") for action in actions}
    assert actions == CHARGER_INITIATED | CENTRAL_INITIATED
    assert {"DataTransfer"} == CHARGER_INITIATED & CENTRAL_INITIATED


@pytest.mark.parametrize("name", NAMES)
def test_structs_mirror_the_schemas(name: str) -> None:
    ours, theirs = case(name).shapes()
    assert ours == theirs


@ORACLE.each_schema(SETTINGS)
def test_valid_payloads_are_accepted(name: str, data: st.DataObject) -> None:
    c = case(name)
    assert c.verdicts(data.draw(c.valid, label="payload")) == (True, True)


@ORACLE.each_schema(settings(SETTINGS, max_examples=25))
def test_mutated_payloads_are_judged_alike(name: str, data: st.DataObject) -> None:
    c = case(name)
    assert not c.disagreements(data.draw(c.seed, label="payload"))


@ORACLE.each_schema(SETTINGS)
def test_decoded_payloads_encode_back_to_valid_ones(name: str, data: st.DataObject) -> None:
    c = case(name)
    decoded, encoded = c.round_trip(data.draw(c.valid, label="payload"))
    assert c.validator.is_valid(json.loads(encoded)), encoded
    assert c.decoder.decode(encoded) == decoded


def _period(limit: float) -> dict[str, Any]:
    schedule = {
        "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}],
    }
    return {"status": "Accepted", "chargingSchedule": schedule}


def _at(timestamp: str) -> dict[str, Any]:
    return {"type": "x", "timestamp": timestamp}


@pytest.mark.parametrize(
    ("name", "payload", "schema_accepts", "struct_accepts"),
    [
        ("GetCompositeScheduleResponse", _period(0.3), False, True),
        ("GetCompositeScheduleResponse", _period(2.3), False, True),
        ("GetCompositeScheduleResponse", _period(7.4), True, True),
        ("GetCompositeScheduleResponse", _period(0.35), False, False),
        ("LogStatusNotification", {"status": "Idle", "requestId": 1.0}, True, False),
        ("SecurityEventNotification", _at("2024-01-01 12:00:00Z"), False, True),
        ("SecurityEventNotification", _at("2024-01-01T12:00:00+0100"), False, True),
        (
            "UpdateFirmware",
            {"location": "not a uri", "retrieveDate": "2024-01-01T12:00:00Z"},
            True,
            True,
        ),
    ],
)
def test_known_divergences(
    name: str, payload: dict[str, Any], schema_accepts: bool, struct_accepts: bool
) -> None:
    """The divergences the module docstring lists (multipleOf, draft-06
    integers, date-times, uris), beside neighbours on which both sides
    agree."""
    assert case(name).verdicts(payload) == (schema_accepts, struct_accepts)
