"""An OCPP 2.0.1 station's device model: components (with their EVSE and
connector, if any) holding variables, each with up to four attributes
(Actual, Target, MinSet, MaxSet). Pure: how a variable attribute is named in
hot state and what a report, a GetVariables or a SetVariables result writes.

Hot state keeps each station's current values (``ocpp:cp:{cp}:variables``),
the newest word winning: each with the time it was true
(``:variable_times``: a report's generatedAt, a command's answer), so that
a report generated before a SetVariables but processed after it does not
undo it. And what NotifyReport said of each attribute's mutability and its
variable's characteristics (``:variable_meta``). All three under the same
field: the attribute's identity as a JSON array, unambiguous whatever the
names hold.
History keeps every value reported, got or set
(``history.VariableReported``); PostgreSQL the catalogue of component and
variable names all stations share.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from processor import history, keys
from processor.effects import Effects
from processor.v201.messages import (
    ComponentType,
    ReportDataType,
    VariableAttributeType,
    VariableType,
)

_json = msgspec.json.Encoder()
# How long a report's progress is kept after it was asked for or last added to.
REPORT_TTL_S = 7 * 86400


class Attribute(msgspec.Struct, array_like=True, frozen=True):
    """One variable attribute's identity: the Redis field (as JSON) and the
    history row's key columns."""

    component: str
    component_instance: str
    evse_id: int | None
    connector_id: int | None
    variable: str
    variable_instance: str
    attribute_type: str

    @classmethod
    def of(cls, component: ComponentType, variable: VariableType, kind: str | None) -> Attribute:
        evse = component.evse
        return cls(
            component.name, component.instance or "", evse.id if evse else None,
            evse.connector_id if evse else None, variable.name, variable.instance or "",
            kind or "Actual",
        )  # fmt: skip

    @property
    def field(self) -> str:
        return _json.encode(self).decode()


def _meta(attribute: VariableAttributeType, data: ReportDataType) -> str:
    meta: dict[str, object] = {"mutability": attribute.mutability or "ReadWrite",
                               "persistent": attribute.persistent,
                               "constant": attribute.constant}  # fmt: skip
    if data.variable_characteristics is not None:
        meta["characteristics"] = data.variable_characteristics
    return _json.encode(meta).decode()


def record_report(
    effects: Effects, cp: str, request_id: int, seq_no: int, at: str,
    data: Sequence[ReportDataType],
) -> None:  # fmt: skip
    """A NotifyReport part: every attribute's value (where reported) and
    meta to hot state, every attribute to history."""
    values: dict[str, str] = {}
    metas: dict[str, str] = {}
    position = 0
    for item in data:
        for attribute in item.variable_attribute:
            key = Attribute.of(item.component, item.variable, attribute.type)
            metas[key.field] = _meta(attribute, item)
            if attribute.value is not None:
                values[key.field] = attribute.value
            characteristics = item.variable_characteristics
            described = None if characteristics is None else _json.encode(characteristics).decode()
            effects.record(_reported(cp, key, attribute.value, attribute.mutability, described,
                                     "NotifyReport", f"report:{request_id}:{at}:{seq_no}",
                                     position, at))  # fmt: skip
            position += 1
    effects.newest_fields(keys.variables(cp), keys.variable_times(cp), at, values)
    if metas:
        effects.hset(keys.variable_meta(cp), metas)


def record_value(
    effects: Effects, cp: str, key: Attribute, value: str, source: str, origin: str,
    position: int, at: str,
) -> None:  # fmt: skip
    """A value got or set through a command: hot state and history."""
    effects.newest_fields(keys.variables(cp), keys.variable_times(cp), at, {key.field: value})
    effects.record(_reported(cp, key, value, None, None, source, origin, position, at))


def _reported(
    cp: str, key: Attribute, value: str | None, mutability: str | None,
    characteristics: str | None, source: str, origin: str, position: int, at: str,
) -> history.VariableReported:  # fmt: skip
    return history.VariableReported(
        cp, key.component, key.component_instance, key.evse_id, key.connector_id, key.variable,
        key.variable_instance, key.attribute_type, value, mutability, characteristics, source,
        origin, position, at,
    )  # fmt: skip
