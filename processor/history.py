"""History records: what the processor hands to ``ocpp-archiver`` for PostgreSQL.

A handler adds records to its :class:`processor.effects.Effects`; the commit
appends the records of every entry it acknowledges to the ``ocpp:history``
stream in the same atomic step as the reply and the XACK, so a message's
history is appended once or not at all. One stream entry per commit batch:
each field is named by the inbound entry id the records came from and holds
them as one MessagePack array (see :func:`encode`). Lua appends records of
its own (commands reaching a state, anomalies it finds) as fields named
``!<kind>``, see :data:`LUA_FIELD_PREFIX`.

Records are array-like tagged Structs: compact on the wire, and each kind
decodes to its own type. Times are :func:`processor.clock.stored` text,
which PostgreSQL parses as ``timestamptz``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

# Fields written by Lua scripts rather than from Python records.
LUA_FIELD_PREFIX = "!"


class _Record(msgspec.Struct, array_like=True, tag_field="k"):
    pass


class MeterReading(_Record, tag="mv"):
    """One meterValue: its timestamp and its sampled values, the JSON array
    as OCPP spells it (``[{"value": "1500", "measurand": ...}, ...]``), each
    with every attribute the charger sent and none it left out, signed data
    as sent. PostgreSQL keeps it as json, one row per meterValue."""

    charge_point_id: str
    connector_id: int
    # 1.6's integer id; 2.0.1's is the station's text.
    transaction_id: int | str | None
    sampled_at: str
    sampled_values: bytes


class TransactionStarted(_Record, tag="start"):
    charge_point_id: str
    transaction_id: int
    connector_id: int
    id_tag: str
    reservation_id: int | None
    started_at: str
    meter_start: int
    id_tag_status: str


class TransactionStopped(_Record, tag="stop"):
    charge_point_id: str
    transaction_id: int
    stopped_at: str
    meter_stop: int
    reason: str | None
    id_tag: str | None


class TransactionEvent(_Record, tag="tev"):
    """One OCPP 2.0.1 TransactionEvent, keyed in history by (station,
    transactionId, seqNo): a retry under a new message id is the same row.
    What it says of the session (the start facts, the stop facts) fills the
    transaction's row where still empty, so events converge in any order.
    ``meter`` is the energy register in Wh when the event carried one of
    its begin or end readings (``Transaction.Begin``, ``Transaction.End``)."""

    charge_point_id: str
    transaction_id: str
    seq_no: int
    event_type: str  # Started, Updated, Ended
    trigger_reason: str
    occurred_at: str
    offline: bool
    evse_id: int | None
    connector_id: int | None
    id_token: str | None
    id_token_type: str | None
    id_token_status: str | None
    charging_state: str | None
    stopped_reason: str | None
    remote_start_id: int | None
    reservation_id: int | None
    meter: int | None


class VariableReported(_Record, tag="var"):
    """One OCPP 2.0.1 variable attribute as a station reported it
    (NotifyReport) or a command got or set it (GetVariables,
    SetVariables). Keyed in history by the station, ``origin`` (the report
    part, ``report:<requestId>:<generatedAt>:<seqNo>``, or ``command:<id>``) and its
    position there: a part sent again is the same rows."""

    charge_point_id: str
    component: str
    component_instance: str
    evse_id: int | None
    connector_id: int | None
    variable: str
    variable_instance: str
    attribute_type: str
    value: str | None
    mutability: str | None
    characteristics: str | None  # JSON, as the station sent it
    source: str
    origin: str
    position: int
    reported_at: str


class ChargerEvent(_Record, tag="event"):
    """A boot, status change, notification or security event."""

    charge_point_id: str
    kind: str
    occurred_at: str
    connector_id: int | None
    details: dict[str, str]


class Anomaly(_Record, tag="anomaly"):
    charge_point_id: str | None
    kind: str
    occurred_at: str
    details: dict[str, str]


class DeadLetter(_Record, tag="dead"):
    """Input the processor could not handle, verbatim; keyed by its entry id."""

    entry_id: str
    charge_point_id: str | None
    reason: str
    envelope: bytes
    dead_at: str


Record = (
    MeterReading
    | TransactionStarted
    | TransactionStopped
    | TransactionEvent
    | VariableReported
    | ChargerEvent
    | Anomaly
    | DeadLetter
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(list[Record])
_lua_decoder = msgspec.msgpack.Decoder(list[str])


def encode(records: Sequence[Record]) -> bytes:
    return _encoder.encode(records)


def decode(blob: bytes) -> list[Record]:
    return _decoder.decode(blob)


def decode_lua(blob: bytes) -> dict[str, str]:
    """A Lua-made record: a flat MessagePack array of field, value, ..."""
    flat = _lua_decoder.decode(blob)
    return dict(zip(flat[::2], flat[1::2], strict=True))
