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

import functools
import json
import re
import subprocess
import sys
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

from processor.v201.messages import CENTRAL_INITIATED, CHARGER_INITIATED, REQUESTS, RESPONSES

SCHEMAS = Path(ocpp.__file__).parent / "v201" / "schemas"
NAMES = sorted(p.stem for p in SCHEMAS.glob("*.json"))
GENERATOR = Path(__file__).resolve().parents[2] / "tools" / "v201_messages.py"
Schema = dict[str, Any]

SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # No explain phase: it replays a failure of the mutation test for minutes.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)
ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
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
        assert "draft-06" in self.schema["$schema"]
        checker = jsonschema.FormatChecker(formats=["date-time"])
        self.validator = jsonschema.Draft6Validator(self.schema, format_checker=checker)
        if name.endswith("Response"):
            self.struct = RESPONSES[name.removesuffix("Response")]
        else:
            self.struct = REQUESTS[name.removesuffix("Request")]
        self.decoder = msgspec.json.Decoder(self.struct)
        self.valid = self.strategy(self.schema, longest=3)
        # Mutants of a payload cost its size squared: shorter lists to mutate.
        self.seed = self.strategy(self.schema, longest=1)

    def deref(self, schema: Schema) -> Schema:
        ref = schema.get("$ref")
        if ref is None:
            return schema
        result: Schema = self.schema["definitions"][ref.removeprefix("#/definitions/")]
        return result

    def strategy(self, schema: Schema, longest: int) -> st.SearchStrategy[Any]:
        # hypothesis-jsonschema 0.23.1 draws objects through a Hypothesis
        # internal (many.more()) gone since Hypothesis 6.170.10, so objects
        # and arrays are composed here and only leaves come from from_schema.
        schema = self.deref(schema)
        kind = schema.get("type")
        if kind == "object":
            props = {k: self.strategy(v, longest) for k, v in schema.get("properties", {}).items()}
            required = set(schema.get("required", ()))
            return st.fixed_dictionaries(
                {k: s for k, s in props.items() if k in required},
                optional={k: s for k, s in props.items() if k not in required},
            )
        if kind == "array":
            items = self.strategy(schema["items"], longest)
            most = min(longest, schema.get("maxItems", longest))
            return st.lists(items, min_size=schema.get("minItems", 0), max_size=most)
        if kind is None:  # DataTransfer's data: any JSON value
            return ANY_JSON
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
            out += [0.5, -1.5]  # draft-06: an integral float would be an integer
        for bound, step in (("minimum", -1), ("maximum", 1)):
            if bound in schema:  # written 0.0 and 100.0, even for integers
                edge = int(schema[bound]) if kind == "integer" else schema[bound]
                out += [edge, edge + step]
        return out

    def mutants(self, schema: Schema, value: Any) -> Iterator[Any]:
        """``value`` with one change somewhere inside: a field dropped, added
        under a near-miss name, any field or item replaced, a list grown to
        its longest and past it."""
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
        elif isinstance(value, list) and "items" in schema:  # not DataTransfer's data
            items = schema["items"]
            for i, item in enumerate(value):
                for r in [*self.replacements(items), *self.mutants(items, item)]:
                    yield [*value[:i], r, *value[i + 1 :]]
            if value and "maxItems" in schema:
                yield value + [value[0]] * (schema["maxItems"] + 1 - len(value))

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
    the official schemas and msgspec's."""
    if "$ref" in schema:
        return shape(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
    if "enum" in schema:
        return {"enum": sorted(schema["enum"])}
    kind = schema.get("type")
    if kind is None:
        return "any"
    if kind == "object":
        return {
            "properties": {k: shape(v, defs) for k, v in schema.get("properties", {}).items()},
            "required": sorted(schema.get("required", ())),
            "closed": schema.get("additionalProperties") is False,
        }
    if kind == "array":
        sizes = {k: schema.get(k) for k in ("minItems", "maxItems")}
        return {"items": shape(schema["items"], defs), **sizes}
    keys = ("maxLength", "minimum", "maximum", "default")
    return {"type": kind, "date-time": schema.get("format") == "date-time"} | {
        k: schema.get(k) for k in keys
    }


@functools.cache
def case(name: str) -> Case:
    return Case(name)


def test_every_action_has_both_structs() -> None:
    actions = {n.removesuffix("Request") for n in NAMES if n.endswith("Request")}
    assert len(NAMES) == 128
    assert len(actions) == 64
    assert set(REQUESTS) == set(RESPONSES) == actions
    for action in actions:
        assert REQUESTS[action].__name__ == action
        assert RESPONSES[action].__name__ == f"{action}Response"
    assert actions == CHARGER_INITIATED | CENTRAL_INITIATED
    assert {"DataTransfer"} == CHARGER_INITIATED & CENTRAL_INITIATED
    assert (len(CHARGER_INITIATED), len(CENTRAL_INITIATED)) == (25, 40)


@pytest.mark.parametrize("name", NAMES)
def test_structs_mirror_the_schemas(name: str) -> None:
    c = case(name)
    ours = msgspec.json.schema(c.struct)
    assert shape(ours, ours["$defs"]) == shape(c.schema, c.schema.get("definitions", {}))


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_valid_payloads_are_accepted_and_encode_back(name: str, data: st.DataObject) -> None:
    c = case(name)
    payload = data.draw(c.valid, label="payload")
    assert c.validator.is_valid(payload)
    decoded = c.decoder.decode(json.dumps(payload).encode())
    encoded = msgspec.json.encode(decoded)
    assert c.validator.is_valid(json.loads(encoded)), encoded
    assert c.decoder.decode(encoded) == decoded


@pytest.mark.parametrize("name", NAMES)
@settings(SETTINGS, max_examples=6)
@given(data=st.data())
def test_mutated_payloads_are_judged_alike(name: str, data: st.DataObject) -> None:
    c = case(name)
    payload = data.draw(c.seed, label="payload")
    disagreements = [
        (mutant, [e.message for e in c.validator.iter_errors(mutant)])
        for mutant in [*WRONG_TYPES, *c.mutants(c.schema, payload)]
        if c.accepts(mutant) != c.validator.is_valid(mutant)
    ]
    assert not disagreements


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
    """The divergences the module docstring lists, beside neighbours on
    which both sides agree."""
    c = case(name)
    assert c.validator.is_valid(payload) == schema_accepts
    assert c.accepts(payload) == struct_accepts


def test_custom_data_drops_fields_it_does_not_define() -> None:
    c = case("HeartbeatRequest")
    decoded = c.decoder.decode(json.dumps(_custom(vendorId="v", extra=1)).encode())
    assert json.loads(msgspec.json.encode(decoded)) == _custom(vendorId="v")


def test_generated_modules_are_fresh() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
