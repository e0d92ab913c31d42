"""History stream entries into table rows: pure, no database, no Redis.

Each row's key comes from the entry alone, so writing the same entries
again (a redelivery, a claim) produces the same keys and ``ON CONFLICT``
refuses the doubles (see ``migrations/0001_history.sql``): meter values (a
row per meterValue) are keyed by their content, events and anomalies by the history entry's id and
their position in it, transactions by (charger, transactionId), commands by
their id, dead letters by the inbound entry's id.

Columns are gathered column by column, the shape ``unnest`` takes in
``write.sql``: one statement per table whatever the batch's size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from processor import clock, history, json_depth

_json = msgspec.json.Encoder()
# Later command states win; a redelivered earlier one changes nothing.
COMMAND_RANK = {"queued": 0, "sent": 1}
_FINAL_RANK = 2


class Columns:
    """Rows of one table, as one list per column."""

    __slots__ = ("columns",)

    def __init__(self, width: int) -> None:
        self.columns: tuple[list[Any], ...] = tuple([] for _ in range(width))

    def add(self, *values: Any) -> None:
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)

    def __len__(self) -> int:
        return len(self.columns[0])


# transactions_v201's columns after its key, as write.sql lists them.
SESSION_COLUMNS = ("evse_id", "connector_id", "evse_seq", "id_token", "id_token_type",
                   "id_token_status", "id_token_seq", "remote_start_id", "reservation_id",
                   "started_at", "meter_start", "stopped_at", "meter_stop",
                   "stopped_reason")  # fmt: skip
# Facts kept from the lowest seqNo naming them, by the field holding it.
_EARLIEST = {"evse_seq": ("evse_id", "connector_id"),
             "id_token_seq": ("id_token", "id_token_type", "id_token_status")}  # fmt: skip


@dataclass
class SessionFacts:
    """What one batch's events say of an OCPP 2.0.1 session, merged as the
    database merges them: a fact's first word stands, the start's and the
    stop's facts each come whole from their event."""

    charge_point_id: str
    transaction_id: str
    facts: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def said(r: history.TransactionEvent) -> dict[str, Any]:
        """What event ``r`` says of its session; empty for most (a periodic
        Updated says nothing of it, and writes no row)."""
        facts: dict[str, Any] = {}
        if r.evse_id is not None:
            facts |= {"evse_id": int4(r.evse_id), "connector_id": int4(r.connector_id),
                      "evse_seq": r.seq_no}  # fmt: skip
        if r.id_token is not None:
            facts |= {"id_token": text(r.id_token), "id_token_type": r.id_token_type,
                      "id_token_status": r.id_token_status, "id_token_seq": r.seq_no}  # fmt: skip
        if int4(r.remote_start_id) is not None:
            facts["remote_start_id"] = r.remote_start_id
        if int4(r.reservation_id) is not None:
            facts["reservation_id"] = r.reservation_id
        # The start's and the stop's facts go whole, null meters included.
        if r.event_type == "Started":
            facts |= {"started_at": r.occurred_at, "meter_start": r.meter}
        if r.event_type == "Ended":
            facts |= {"stopped_at": r.occurred_at, "meter_stop": r.meter,
                      "stopped_reason": r.stopped_reason or "Local"}  # fmt: skip
        return facts

    def add(self, said: dict[str, Any]) -> None:
        """Merge what one event said as the database does: the EVSE's and
        the token's facts from the lowest seqNo, the start's and the stop's
        whole from the first event saying them, the rest the first word."""
        said = dict(said)
        for seq_field, names in _EARLIEST.items():
            if seq_field not in said:
                continue
            held = self.facts.get(seq_field)
            facts = {name: said.pop(name) for name in (seq_field, *names)}
            if held is None or facts[seq_field] < held:
                self.facts.update(facts)
        if "started_at" in self.facts:
            said = {k: v for k, v in said.items() if k not in ("started_at", "meter_start")}
        if "stopped_at" in self.facts:
            said = {k: v for k, v in said.items()
                    if k not in ("stopped_at", "meter_stop", "stopped_reason")}  # fmt: skip
        for name, value in said.items():
            self.facts.setdefault(name, value)

    def row(self) -> tuple[Any, ...]:
        return (self.charge_point_id, self.transaction_id,
                *(self.facts.get(name) for name in SESSION_COLUMNS))  # fmt: skip


@dataclass
class Rows:
    """What a batch of history entries writes, table by table."""

    meter_values: Columns = field(default_factory=lambda: Columns(9))
    starts: dict[tuple[str, int], tuple[Any, ...]] = field(default_factory=dict)
    stops: dict[tuple[str, int], tuple[Any, ...]] = field(default_factory=dict)
    # OCPP 2.0.1: each event, and what the batch's events say of each session.
    transaction_events: Columns = field(default_factory=lambda: Columns(10))
    # OCPP 2.0.1 device models: each value, and the names for the catalogue.
    variable_values: Columns = field(default_factory=lambda: Columns(15))
    variable_names: set[tuple[str, str, str, str]] = field(default_factory=set)
    sessions: dict[tuple[str, str], SessionFacts] = field(default_factory=dict)
    events: Columns = field(default_factory=lambda: Columns(7))
    anomalies: Columns = field(default_factory=lambda: Columns(6))
    dead_letters: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    commands: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return (len(self.meter_values) + len(self.starts) + len(self.stops) + len(self.events)
                + len(self.anomalies) + len(self.dead_letters) + len(self.commands)
                + len(self.transaction_events) + len(self.variable_values))  # fmt: skip


def text(value: str | None) -> str | None:
    """PostgreSQL text holds no NUL, which JSON lets a charger send: each
    becomes U+FFFD rather than failing the batch."""
    if value is not None and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


# An id a station sends as any JSON integer, kept in an integer column:
# past int4 the column cannot hold it and would refuse the whole message's
# history. Where the id only describes the row (an EVSE, a reservation, a
# remote start), the row is kept without it (hot state in Redis has it
# while it keeps the session). Where it keys the row (1.6's transactionId,
# a meter value's connector), the message is set aside whole instead.
_INT4 = range(-(2**31), 2**31)


def int4(value: int | None) -> int | None:
    return value if value is not None and value in _INT4 else None


def _details(fields: Mapping[str, str]) -> str:
    # jsonb refuses \u0000 as text does NUL.
    return _json.encode({text(k): text(v) for k, v in fields.items()}).decode()


def reading_key(transaction_id: int | str | None, sampled_values: bytes) -> int:
    """A signed 64-bit digest (bigint) of a meterValue's content: with
    charger, connector and time, its key, so the same reading sent twice is
    one row and two different ones at the same instant are two."""
    digest = hashlib.blake2b(sampled_values, digest_size=8, key=_txn(transaction_id)).digest()
    return int.from_bytes(digest, "big", signed=True)


def _txn(transaction_id: int | str | None) -> bytes:
    # blake2b takes a key of 64 bytes at most; a 2.0.1 id of 36 characters
    # may be longer in UTF-8. Shorter ids stay as they are (keys already
    # written keep theirs).
    key = b"" if transaction_id is None else str(transaction_id).encode()
    return key if len(key) <= 64 else hashlib.blake2b(key, digest_size=32).digest()


def _entry_time(entry_id: str) -> str:
    ms = int(entry_id.partition("-")[0])
    return clock.stored(datetime.fromtimestamp(ms / 1000, UTC))


def gather(entries: Iterable[tuple[str, Mapping[str, bytes]]]) -> Rows:
    """The rows of ``entries``: (history entry id, its fields), in stream order.
    Raises ``msgspec.DecodeError`` or ``ValueError`` for an entry that is
    not history (the caller sets it aside)."""
    rows = Rows()
    for entry_id, fields in entries:
        add(rows, entry_id, fields)
    return rows


# Positions within a field: a field's rows are numbered from its index in
# the entry times this, so each field's keys are the same whether it is
# written with the rest of its entry or alone (when it is set apart).
FIELD_POSITIONS = 1 << 16


def add(
    rows: Rows, entry_id: str, fields: Mapping[str, bytes], only: Container[str] | None = None
) -> None:
    """Adds one history entry's rows to ``rows``; with ``only``, just the
    rows of those fields."""
    for index, (name, blob) in enumerate(fields.items()):
        if only is None or name in only:
            add_field(rows, entry_id, index, name, blob)


def add_field(rows: Rows, entry_id: str, index: int, name: str, blob: bytes) -> None:
    """Adds the rows of field ``name``, the ``index``-th of entry ``entry_id``.
    What is not history raises before any row is added."""
    seq = index * FIELD_POSITIONS
    if name.startswith(history.LUA_FIELD_PREFIX):
        _lua(rows, entry_id, seq, name, history.decode_lua(blob))
        return
    for record in history.decode(blob):  # decoded whole first: all or nothing
        seq = _record(rows, entry_id, seq, record)


def _record(rows: Rows, entry_id: str, seq: int, r: history.Record) -> int:
    match r:
        case history.MeterReading():
            # 1.6's integer id in transaction_id, 2.0.1's text in transaction_ref.
            number = r.transaction_id if isinstance(r.transaction_id, int) else None
            ref = text(r.transaction_id) if isinstance(r.transaction_id, str) else None
            rows.meter_values.add(text(r.charge_point_id), r.connector_id, r.sampled_at,
                                  reading_key(r.transaction_id, r.sampled_values), number,
                                  r.sampled_values.decode(), entry_id, seq, ref)  # fmt: skip
        case history.TransactionEvent():
            cp, tid = text(r.charge_point_id) or "", text(r.transaction_id) or ""
            rows.transaction_events.add(cp, tid, r.seq_no, r.event_type, r.trigger_reason,
                                        r.occurred_at, r.offline, r.charging_state,
                                        text(r.id_token), entry_id)  # fmt: skip
            said = SessionFacts.said(r)
            # An event that says nothing of the session (a periodic Updated)
            # writes no row: an all-empty upsert is a third of its cost.
            if said:
                rows.sessions.setdefault((cp, tid), SessionFacts(cp, tid)).add(said)
        case history.TransactionStarted():
            key = (text(r.charge_point_id) or "", r.transaction_id)
            rows.starts.setdefault(key, (*key, int4(r.connector_id), text(r.id_tag),
                                         int4(r.reservation_id), r.started_at, r.meter_start,
                                         r.id_tag_status))  # fmt: skip
        case history.TransactionStopped():
            key = (text(r.charge_point_id) or "", r.transaction_id)
            rows.stops.setdefault(key, (*key, r.stopped_at, r.meter_stop, text(r.reason),
                                        text(r.id_tag)))  # fmt: skip
        case history.VariableReported():
            names = (text(r.component) or "", text(r.component_instance) or "",
                     text(r.variable) or "", text(r.variable_instance) or "")  # fmt: skip
            rows.variable_names.add(names)
            rows.variable_values.add(
                text(r.charge_point_id), text(r.origin), r.position, names[0], names[1],
                int4(r.evse_id), int4(r.connector_id), names[2], names[3], text(r.attribute_type),
                text(r.value), text(r.mutability), text(r.characteristics), text(r.source),
                r.reported_at,
            )  # fmt: skip
        case history.ChargerEvent():
            rows.events.add(entry_id, seq, text(r.charge_point_id), text(r.kind), r.occurred_at,
                            int4(r.connector_id), _details(r.details))  # fmt: skip
        case history.Anomaly():
            rows.anomalies.add(entry_id, seq, text(r.charge_point_id), text(r.kind),
                               r.occurred_at, _details(r.details))  # fmt: skip
        case history.DeadLetter():
            rows.dead_letters.setdefault(
                r.entry_id,
                (r.entry_id, text(r.charge_point_id), text(r.reason), r.envelope, r.dead_at),
            )
    return seq + 1


def _lua(rows: Rows, entry_id: str, seq: int, name: str, f: dict[str, str]) -> None:
    kind = name[len(history.LUA_FIELD_PREFIX) :].partition(":")[0]
    if kind == "anomaly":
        details = {k: v for k, v in f.items() if k not in ("kind", "charge_point_id")}
        rows.anomalies.add(entry_id, seq, text(f.get("charge_point_id")), text(f.get("kind", "")),
                           _entry_time(entry_id), _details(details))  # fmt: skip
    elif kind == "command":
        _command(rows, f)
    else:
        raise ValueError(f"history field {name!r} is of no kind the archiver knows")


def _command(rows: Rows, f: dict[str, str]) -> None:
    command_id, state = f["command_id"], f.get("state", "")
    held = rows.commands.get(command_id)
    if held is not None and _rank(held[4]) > _rank(state):
        return
    outcome: dict[str, Any] = {}
    for name in ("status", "error_code", "error_description", "round_trip_ms"):
        if name in f:
            outcome[name] = f[name]
    if "result" in f:
        outcome["result"] = _json_or_text(f["result"])
    late = {k[len("late_") :]: v for k, v in f.items() if k.startswith("late_")}
    if late:
        outcome["late"] = late
    rows.commands[command_id] = (
        command_id, text(f.get("charge_point_id", "")), text(f.get("action", "")),
        _jsonb(f.get("request", "null")), text(state),
        _jsonb_value(outcome) if outcome else None,
        _ms(f.get("created_at_ms")), _ms(f.get("sent_at_ms")), _ms(f.get("completed_at_ms")),
    )  # fmt: skip


def _rank(state: str) -> int:
    return COMMAND_RANK.get(state, _FINAL_RANK)


def _jsonb(raw: str) -> str:
    return _jsonb_value(_json_or_text(raw))


def _json_or_text(raw: str) -> Any:
    """``raw`` decoded, or kept as text if it is not JSON we can hold (a
    charger's broken reply, nested past what a decoder may recurse)."""
    if not json_depth.within(raw.encode()):
        return raw
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw


def _jsonb_value(value: Any) -> str:
    return _json.encode(_clean(value)).decode()


def _clean(value: Any) -> Any:
    """``value`` with every NUL in its strings replaced (jsonb refuses \\u0000)."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {text(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _ms(value: str | None) -> int | None:
    return int(value) if value else None
