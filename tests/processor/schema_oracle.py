"""The differential oracle both versions' schema tests share
(tests/processor/test_schemas.py for OCPP 1.6, test_schemas_v201.py for
2.0.1): the official JSON schemas the ``ocpp`` package ships, a ``jsonschema``
validator for each, payloads drawn from them and mutations of those, to be
judged alike by the validator and by our Struct.

What differs between the versions is an :class:`Oracle`'s parameters: the
schema directory, the requests' and responses' Structs, the JSON Schema
drafts allowed (1.6 mixes draft-04 and draft-06, 2.0.1 is all draft-06) and
how long the drawn lists may grow. The rest is the union of what either
version's schemas use: a keyword one version lacks (``multipleOf`` in 2.0.1;
``minimum``, ``maximum``, ``maxItems``, ``default`` and untyped values in
1.6) is simply never met there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import ocpp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

Schema = dict[str, Any]

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
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


class Oracle:
    """One OCPP version's schemas, and the Structs that should agree with them.

    ``drafts``: the JSON Schema drafts its schemas may be written in.
    ``longest``: how long a drawn list may grow in valid payloads;
    ``seed_longest``: in those mutated, as mutants cost a payload's size
    squared."""

    def __init__(
        self,
        version: str,
        requests: Mapping[str, type[msgspec.Struct]],
        responses: Mapping[str, type[msgspec.Struct]],
        *,
        drafts: Collection[str],
        longest: int,
        seed_longest: int,
    ) -> None:
        self.schemas = Path(ocpp.__file__).parent / version / "schemas"
        self.names = sorted(p.stem for p in self.schemas.glob("*.json"))
        self.requests = requests
        self.responses = responses
        self.drafts = drafts
        self.longest = longest
        self.seed_longest = seed_longest
        self._cases: dict[str, Case] = {}

    @property
    def actions(self) -> set[str]:
        """The actions there are schemas for, named as their requests'
        schemas are but for a ``Request`` suffix (1.6's ``Authorize``, 2.0.1's
        ``AuthorizeRequest``)."""
        return {n.removesuffix("Request") for n in self.names if not n.endswith("Response")}

    def pairs(self) -> dict[str, tuple[str | None, str | None]]:
        """Each action either Struct table knows, with the names of its
        request's and response's Structs (``None`` for one missing)."""
        return {
            action: (
                self.requests[action].__name__ if action in self.requests else None,
                self.responses[action].__name__ if action in self.responses else None,
            )
            for action in {*self.requests, *self.responses}
        }

    def each_schema(
        self, drawing: settings
    ) -> Callable[[Callable[[str, st.DataObject], None]], Callable[..., None]]:
        """Runs a test of ``(name, data)`` for each schema's name, drawing
        from ``data`` as ``drawing`` says."""

        def decorate(test: Callable[[str, st.DataObject], None]) -> Callable[..., None]:
            drawn = drawing(given(data=st.data())(test))
            parametrized: Callable[..., None] = pytest.mark.parametrize("name", self.names)(drawn)
            return parametrized

        return decorate

    def struct(self, name: str) -> type[msgspec.Struct]:
        if name.endswith("Response"):
            return self.responses[name.removesuffix("Response")]
        return self.requests[name.removesuffix("Request")]

    def case(self, name: str) -> Case:
        if name not in self._cases:
            self._cases[name] = Case(self, name)
        return self._cases[name]


class Case:
    """One schema, its validator, and the Struct that should agree with it."""

    def __init__(self, oracle: Oracle, name: str) -> None:
        self.schema: Schema = json.loads((oracle.schemas / f"{name}.json").read_text())
        draft = re.search(r"draft-\d+", self.schema["$schema"])
        assert draft is not None and draft[0] in oracle.drafts, self.schema["$schema"]
        self.draft6 = draft[0] == "draft-06"
        cls = jsonschema.validators.validator_for(self.schema)
        checker = jsonschema.FormatChecker(formats=["date-time"])
        self.validator = cls(self.schema, format_checker=checker)
        self.struct = oracle.struct(name)
        self.decoder = msgspec.json.Decoder(self.struct)
        self.valid = self.strategy(self.schema, oracle.longest)
        self.seed = self.strategy(self.schema, oracle.seed_longest)

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
        if kind is None:  # 2.0.1 DataTransfer's data: any JSON value
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
            # draft-06 counts an integral float as an integer; draft-04 does not.
            out += [0.5, -1.5] if self.draft6 else [0.5, -1.5, 1.0]
        if kind == "number" and "multipleOf" in schema:
            out += [0.05, 1.23, 16.05]
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
        elif isinstance(value, list) and "items" in schema:  # not 2.0.1 DataTransfer's data
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

    def shapes(self) -> tuple[Any, Any]:
        """The Struct's constraints and the schema's, each as :func:`shape` puts them."""
        ours = msgspec.json.schema(self.struct)
        return shape(ours, ours["$defs"]), shape(self.schema, self.schema.get("definitions", {}))

    def disagreements(self, payload: Any) -> list[tuple[Any, list[str]]]:
        """The mutants of ``payload`` (and the wrong types in its stead) the
        Struct and the validator judge apart, with the validator's errors."""
        return [
            (mutant, [e.message for e in self.validator.iter_errors(mutant)])
            for mutant in [*WRONG_TYPES, *self.mutants(self.schema, payload)]
            if self.accepts(mutant) != self.validator.is_valid(mutant)
        ]

    def verdicts(self, payload: Any) -> tuple[bool, bool]:
        """Whether the validator accepts ``payload``, and whether the Struct does."""
        return self.validator.is_valid(payload), self.accepts(payload)

    def round_trip(self, payload: Any) -> tuple[Any, bytes]:
        """``payload`` decoded by the Struct, and that encoded again."""
        decoded = self.decoder.decode(json.dumps(payload).encode())
        return decoded, msgspec.json.encode(decoded)


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
