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

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import ocpp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from processor.v16.messages import CENTRAL_INITIATED, CHARGER_INITIATED, REQUESTS, RESPONSES

SCHEMAS = Path(ocpp.__file__).parent / "v16" / "schemas"
NAMES = sorted(p.stem for p in SCHEMAS.glob("*.json"))
Schema = dict[str, Any]

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # No explain phase: it replays a failure of the mutation test for minutes.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
WRONG_TYPES: list[Any] = [None, True, 0, 1.5, "x", [], {}]
MALFORMED_DATETIMES = [
    "",
    "2024-01-01",
    "2024-01-01T12:00:00",  # no offset
    "2024-01-01T12:00Z",
    "2024-13-01T12:00:00Z",
    "2024-02-30T12:00:00Z",
    "2024-01-01T24:00:00Z",
    "2024-01-01T12:00:00+25:00",
    "2024-01-01T12:00:00.Z",
]


class Case:
    """One schema, its validator, and the Struct that should agree with it."""

    def __init__(self, name: str) -> None:
        self.schema: Schema = json.loads((SCHEMAS / f"{name}.json").read_text())
        cls = jsonschema.validators.validator_for(self.schema)
        checker = jsonschema.FormatChecker(formats=["date-time"])
        self.validator = cls(self.schema, format_checker=checker)
        self.draft6 = "draft-06" in self.schema["$schema"]
        action = name.removesuffix("Response")
        self.struct = RESPONSES[action] if name.endswith("Response") else REQUESTS[action]
        self.decoder = msgspec.json.Decoder(self.struct)
        self.valid = self.strategy(self.schema)

    def deref(self, schema: Schema) -> Schema:
        ref = schema.get("$ref")
        if ref is None:
            return schema
        result: Schema = self.schema["definitions"][ref.removeprefix("#/definitions/")]
        return result

    def strategy(self, schema: Schema) -> st.SearchStrategy[Any]:
        # hypothesis-jsonschema 0.23.1 draws objects through a Hypothesis
        # internal (many.more()) gone since Hypothesis 6.170.10, so objects
        # and arrays are composed here and only leaves come from from_schema.
        schema = self.deref(schema)
        kind = schema.get("type")
        if kind == "object":
            props = {k: self.strategy(v) for k, v in schema.get("properties", {}).items()}
            required = set(schema.get("required", ()))
            return st.fixed_dictionaries(
                {k: s for k, s in props.items() if k in required},
                optional={k: s for k, s in props.items() if k not in required},
            )
        if kind == "array":
            items = self.strategy(schema["items"])
            return st.lists(items, min_size=schema.get("minItems", 0), max_size=2)
        return from_schema(schema)

    def replacements(self, schema: Schema) -> list[Any]:
        """Values to put where ``schema`` applies: mostly invalid, a few on the edge."""
        schema = self.deref(schema)
        out = list(WRONG_TYPES)
        kind = schema.get("type")
        if "enum" in schema:
            out += near_misses(schema["enum"])
        elif kind == "string" and "maxLength" in schema:
            n = schema["maxLength"]
            # An astral character too: lengths count code points, not UTF-16 units.
            out += ["x" * n, "x" * (n + 1), "😀" * n, "😀" * (n + 1)]
        if schema.get("format") == "date-time":
            out += MALFORMED_DATETIMES
        if kind == "integer":
            out += [0.5, -1.5] if self.draft6 else [0.5, -1.5, 1.0]
        if kind == "number" and "multipleOf" in schema:
            out += [0.05, 1.23, 16.05]
        return out

    def mutants(self, schema: Schema, value: Any) -> Iterator[Any]:
        """``value`` with one change somewhere inside: a field dropped, added
        under a near-miss name, or any field or item replaced."""
        schema = self.deref(schema)
        if isinstance(value, dict):
            props: Schema = schema.get("properties", {})
            for k in value:
                yield {n: v for n, v in value.items() if n != k}
            for k in near_miss_names(props):
                yield {**value, k: 1}
            for k, sub in props.items():
                for r in self.replacements(sub):
                    yield {**value, k: r}
                if k in value:
                    for m in self.mutants(sub, value[k]):
                        yield {**value, k: m}
        elif isinstance(value, list):
            items = schema["items"]
            for i, item in enumerate(value):
                for r in [*self.replacements(items), *self.mutants(items, item)]:
                    yield [*value[:i], r, *value[i + 1 :]]

    def accepts(self, payload: Any) -> bool:
        try:
            self.decoder.decode(json.dumps(payload).encode())
        except msgspec.ValidationError:
            return False
        return True


def near_misses(values: list[str]) -> list[str]:
    near = {"", values[0].lower(), values[0].upper(), values[-1] + " "}
    return sorted(near - set(values))


def near_miss_names(props: Schema) -> list[str]:
    """Names the schema does not have: its own in other cases or snake_case."""
    names = {"unknownField"}
    for k in props:
        names |= {k[0].upper() + k[1:], k.upper(), re.sub("([A-Z])", r"_\1", k).lower()}
    return sorted(names - set(props))


def shape(schema: Schema, defs: Schema) -> Any:
    """The constraints a Struct and a schema must share, in one form for both
    the official schemas and msgspec's. ``multipleOf`` is left to the
    differential tests, and ``uri`` is checked by neither side."""
    if "$ref" in schema:
        return shape(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    if "enum" in schema:
        return {"enum": sorted(schema["enum"])}
    kind = schema["type"]
    if kind == "object":
        return {
            "properties": {k: shape(v, defs) for k, v in schema.get("properties", {}).items()},
            "required": sorted(schema.get("required", ())),
            "closed": schema.get("additionalProperties") is False,
        }
    if kind == "array":
        return {"items": shape(schema["items"], defs), "minItems": schema.get("minItems", 0)}
    return {
        "type": kind,
        "maxLength": schema.get("maxLength"),
        "date-time": schema.get("format") == "date-time",
    }


@functools.cache
def case(name: str) -> Case:
    return Case(name)


def test_every_operation_has_both_structs() -> None:
    actions = {n for n in NAMES if not n.endswith("Response")}
    assert len(actions) == 39
    assert set(REQUESTS) == set(RESPONSES) == actions
    for action in actions:
        assert REQUESTS[action].__name__ == action
        assert RESPONSES[action].__name__ == f"{action}Response"
    assert actions == CHARGER_INITIATED | CENTRAL_INITIATED
    assert {"DataTransfer"} == CHARGER_INITIATED & CENTRAL_INITIATED


@pytest.mark.parametrize("name", NAMES)
def test_structs_mirror_the_schemas(name: str) -> None:
    c = case(name)
    ours = msgspec.json.schema(c.struct)
    assert shape(ours, ours["$defs"]) == shape(c.schema, c.schema.get("definitions", {}))


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_valid_payloads_are_accepted(name: str, data: st.DataObject) -> None:
    c = case(name)
    payload = data.draw(c.valid, label="payload")
    assert c.validator.is_valid(payload)
    assert c.accepts(payload)


@pytest.mark.parametrize("name", NAMES)
@settings(SETTINGS, max_examples=25)
@given(data=st.data())
def test_mutated_payloads_are_judged_alike(name: str, data: st.DataObject) -> None:
    c = case(name)
    payload = data.draw(c.valid, label="payload")
    disagreements = [
        (mutant, [e.message for e in c.validator.iter_errors(mutant)])
        for mutant in [*WRONG_TYPES, *c.mutants(c.schema, payload)]
        if c.accepts(mutant) != c.validator.is_valid(mutant)
    ]
    assert not disagreements


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_decoded_payloads_encode_back_to_valid_ones(name: str, data: st.DataObject) -> None:
    c = case(name)
    decoded = c.decoder.decode(json.dumps(data.draw(c.valid, label="payload")).encode())
    encoded = msgspec.json.encode(decoded)
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
    """The divergences the module docstring lists, beside neighbours on
    which both sides agree."""
    c = case(name)
    assert c.validator.is_valid(payload) == schema_accepts
    assert c.accepts(payload) == struct_accepts
