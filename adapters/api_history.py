"""History reads behind the HTTP API and ``ocpp-cli``: transactions and
their meter values, charger events and commands, from the PostgreSQL tables
``ocpp-archiver`` writes (``adapters/archiver/migrations/``).

Each read is a pure part, which builds the SQL and its arguments from the
filters and turns rows into the Structs of ``adapters/api_models.py``, and
calls to :class:`adapters.history_db.History`, the I/O: an asyncpg pool
opened without connecting, so that a front end starts while PostgreSQL is
down and its history reads work once it is back. Filters only ever add ``$n``
placeholders to fixed SQL: no value is spliced into a statement.

Paging is keyset, newest first: transactions by id (``before`` is an id, as
it was when they were read from Redis; ours come from one counter),
events and commands by time with an opaque ``before`` cursor.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
from redis.asyncio import Redis

from adapters import api_queries as q
from adapters.api_models import (
    ChargerEvent,
    ChargerEventList,
    Command,
    CommandList,
    MeterValue,
    Transaction,
    TransactionDetail,
    TransactionEventRecord,
    TransactionList,
    TransactionV201,
    TransactionV201Detail,
    TransactionV201List,
)
from adapters.history_db import History, Row
from processor import clock, keys
from processor.command_queue import CommandQueue

# 1.6 transaction ids are ours, from one counter, kept as PostgreSQL integers.
MAX_ID = 2**31 - 1
# A transaction's meter values in one answer, at most; more is flagged
# (meter_values_truncated) rather than cut silently.
MAX_METER_VALUES = 100_000


# --- the pure part: filters, SQL, rows ---------------------------------------


class _Where:
    """Conditions joined by AND, each value a ``$n`` placeholder."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.args: list[object] = []

    def arg(self, value: object) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def add(self, condition: str, *values: object) -> None:
        """``condition`` with ``{}`` for each value, in order."""
        self.conditions.append(condition.format(*(self.arg(v) for v in values)))

    def sql(self) -> str:
        return f"WHERE {' AND '.join(self.conditions)}" if self.conditions else ""


def check_limit(limit: int) -> None:
    if not 1 <= limit <= q.MAX_LIMIT:
        raise q.InvalidInput(f"limit must be between 1 and {q.MAX_LIMIT}, got {limit}")


def parse_time(name: str, text: str | None) -> datetime | None:
    """The RFC 3339 time a query parameter ``name`` gives, if any."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise q.InvalidInput(f"{name} is not an RFC 3339 time: {text!r}") from None
    check_time(name, value)
    return value


def check_time(name: str, value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise q.InvalidInput(f"{name} needs a time zone (RFC 3339, e.g. 2024-01-01T00:00:00Z)")


def _text(dt: datetime | None) -> str | None:
    # The text the processor stores in Redis, so both sources read alike.
    return clock.stored(dt) if dt is not None else None


def encode_cursor(at: datetime, key: str, seq: int = 0) -> str:
    """An opaque ``before`` for rows ordered by (time, key, seq) descending."""
    raw = msgspec.json.encode([clock.stored(at), key, seq])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, key, seq = msgspec.json.decode(raw, type=tuple[str, str, int])
        when = datetime.fromisoformat(at)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise q.InvalidInput(f"before is not a cursor this API gave out: {cursor!r}") from None
    if when.tzinfo is None:
        raise q.InvalidInput(f"before is not a cursor this API gave out: {cursor!r}")
    return when, key, seq


_TRANSACTION_COLUMNS = """charge_point_id, transaction_id, connector_id, id_tag, id_tag_status,
    reservation_id, started_at, meter_start, stopped_at, meter_stop, stop_reason, stop_id_tag,
    energy_wh"""


def _transaction_filters(
    limit: int,
    charge_point_id: str | None,
    card: tuple[str, str | None],
    active: bool | None,
    started_from: datetime | None,
    started_to: datetime | None,
) -> _Where:
    """The filters both versions' transactions take; ``card`` is the
    column naming the card (1.6's idTag, 2.0.1's idToken) and its value."""
    check_limit(limit)
    check_time("started_from", started_from)
    check_time("started_to", started_to)
    where = _Where()
    if charge_point_id is not None:
        where.add("charge_point_id = {}", charge_point_id)
    column, value = card
    if value is not None:
        where.add(f"{column} = {{}}", value)
    if active is not None:
        where.add("stopped_at IS NULL" if active else "stopped_at IS NOT NULL")
    if started_from is not None:
        where.add("started_at >= {}", started_from)
    if started_to is not None:
        where.add("started_at < {}", started_to)
    return where


def transactions_query(
    *,
    charge_point_id: str | None = None,
    id_tag: str | None = None,
    active: bool | None = None,
    started_from: datetime | None = None,
    started_to: datetime | None = None,
    limit: int = 100,
    before: int | None = None,
) -> tuple[str, list[object]]:
    """SQL and arguments for a page of transactions, newest (highest id)
    first, one row more than ``limit`` to tell whether there is more.
    ``started_from`` is inclusive, ``started_to`` exclusive."""
    if before is not None and not 1 <= before <= MAX_ID:
        raise q.InvalidInput(f"before must be a transaction id (1 to {MAX_ID}), got {before}")
    where = _transaction_filters(limit, charge_point_id, ("id_tag", id_tag), active,
                                 started_from, started_to)  # fmt: skip
    if before is not None:
        where.add("transaction_id < {}", before)
    sql = (
        f"SELECT {_TRANSACTION_COLUMNS} FROM transactions {where.sql()}"
        f" ORDER BY transaction_id DESC, charge_point_id DESC LIMIT {where.arg(limit + 1)}"
    )
    return sql, where.args


def transaction_fields(row: Row) -> dict[str, Any]:
    return {
        "transaction_id": row["transaction_id"],
        "charge_point_id": row["charge_point_id"],
        "connector_id": row["connector_id"],
        "id_tag": row["id_tag"],
        "active": row["stopped_at"] is None,
        "meter_start": row["meter_start"],
        "start_timestamp": _text(row["started_at"]),
        "reservation_id": row["reservation_id"],
        "id_tag_status": row["id_tag_status"],
        "meter_stop": row["meter_stop"],
        "stop_timestamp": _text(row["stopped_at"]),
        "stop_reason": row["stop_reason"],
        "stop_id_tag": row["stop_id_tag"],
        "energy_wh": row["energy_wh"],
    }


def transaction_page(rows: Sequence[Row], limit: int) -> TransactionList:
    found = [Transaction(**transaction_fields(r)) for r in rows[:limit]]
    more = len(rows) > limit
    return TransactionList(
        transactions=found, next_before=found[-1].transaction_id if more else None
    )


# With the id alone (history imported from another central system may
# repeat one on another charger), the latest started.
TRANSACTION_BY_ID = f"""SELECT {_TRANSACTION_COLUMNS} FROM transactions WHERE transaction_id = $1
    ORDER BY started_at DESC NULLS LAST, charge_point_id LIMIT 1"""
# Samples at one instant come in the order of their record, then their place in it.
# A row per meterValue, its sampled values a json array: one out a sample.
METER_VALUES = """SELECT m.sampled_at, m.connector_id, s->>'value' AS value,
    s->>'measurand' AS measurand, s->>'phase' AS phase, s->>'location' AS location,
    s->>'unit' AS unit, s->>'context' AS context, s->>'format' AS format, NULL::json AS signed
    FROM meter_values m, json_array_elements(m.sampled_values) WITH ORDINALITY AS e(s, n)
    WHERE m.transaction_id = $1 AND m.charge_point_id = $2
    ORDER BY m.sampled_at, m.record_id, m.seq, e.n LIMIT $3"""


def meter_value(row: Row) -> MeterValue:
    return MeterValue(
        sampled_at=clock.stored(row["sampled_at"]), connector_id=row["connector_id"],
        value=row["value"], measurand=row["measurand"], phase=row["phase"],
        location=row["location"], unit=row["unit"], context=row["context"], format=row["format"],
        signed_meter_value=_decoded(row["signed"]),
    )  # fmt: skip


def events_query(
    charge_point_id: str,
    *,
    kind: str | None = None,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
    limit: int = 100,
    before: str | None = None,
) -> tuple[str, list[object]]:
    """SQL and arguments for a page of a charger's events, newest first."""
    check_limit(limit)
    check_time("from", occurred_from)
    check_time("to", occurred_to)
    where = _Where()
    where.add("charge_point_id = {}", charge_point_id)
    if kind is not None:
        where.add("kind = {}", kind)
    if occurred_from is not None:
        where.add("occurred_at >= {}", occurred_from)
    if occurred_to is not None:
        where.add("occurred_at < {}", occurred_to)
    if before is not None:
        where.add("(occurred_at, record_id, seq) < ({}, {}, {})", *decode_cursor(before))
    sql = (
        "SELECT record_id, seq, kind, occurred_at, connector_id, details FROM charger_events"
        f" {where.sql()} ORDER BY occurred_at DESC, record_id DESC, seq DESC"
        f" LIMIT {where.arg(limit + 1)}"
    )
    return sql, where.args


def _json_object(raw: Any) -> dict[str, Any]:
    value = _decoded(raw)
    return value if isinstance(value, dict) else {"value": value}


def event_page(charge_point_id: str, rows: Sequence[Row], limit: int) -> ChargerEventList:
    events = [
        ChargerEvent(
            record_id=r["record_id"],
            seq=r["seq"],
            kind=r["kind"],
            occurred_at=clock.stored(r["occurred_at"]),
            connector_id=r["connector_id"],
            details=_json_object(r["details"]),
        )  # fmt: skip
        for r in rows[:limit]
    ]
    last = rows[limit - 1] if len(rows) > limit else None
    cursor = encode_cursor(last["occurred_at"], last["record_id"], last["seq"]) if last else None
    return ChargerEventList(charge_point_id=charge_point_id, events=events, next_before=cursor)


_COMMAND_COLUMNS = """command_id, charge_point_id, action, request, state, outcome, created_at,
    sent_at, completed_at"""
COMMAND_BY_ID = f"SELECT {_COMMAND_COLUMNS} FROM commands WHERE command_id = $1"


def commands_query(
    charge_point_id: str, *, limit: int = 100, before: str | None = None
) -> tuple[str, list[object]]:
    """SQL and arguments for a page of a charger's commands, newest first."""
    check_limit(limit)
    where = _Where()
    where.add("charge_point_id = {}", charge_point_id)
    if before is not None:
        at, command_id, _ = decode_cursor(before)
        where.add("(created_at, command_id) < ({}, {})", at, command_id)
    sql = (
        f"SELECT {_COMMAND_COLUMNS} FROM commands {where.sql()}"
        f" ORDER BY created_at DESC, command_id DESC LIMIT {where.arg(limit + 1)}"
    )
    return sql, where.args


def _ms(dt: datetime | None) -> int | None:
    return clock.epoch_ms(dt) if dt is not None else None


def _decoded(raw: Any) -> Any:
    # asyncpg hands json and jsonb over as their text.
    if isinstance(raw, str | bytes):
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            return raw
    return raw


_OUTCOME_FIELDS = frozenset({"result", "status", "error_code", "error_description"})


def command_from_row(row: Row) -> Command:
    """A command as the history keeps it. ``outcome`` holds what its record
    in Redis held (``result``, ``status``, ``error_code``,
    ``error_description``); any other shape is taken as the result."""
    outcome = _decoded(row["outcome"])
    fields: dict[str, Any] = {}
    if isinstance(outcome, dict) and outcome.keys() & _OUTCOME_FIELDS:
        fields = {k: outcome.get(k) for k in _OUTCOME_FIELDS}
        fields["result"] = _decoded(fields["result"])
    elif outcome is not None:
        fields["result"] = outcome
    sent, completed = _ms(row["sent_at"]), _ms(row["completed_at"])
    return Command(
        command_id=row["command_id"], charge_point_id=row["charge_point_id"],
        action=row["action"], state=row["state"], request=_decoded(row["request"]),
        created_at_ms=_ms(row["created_at"]), sent_at_ms=sent, completed_at_ms=completed,
        round_trip_ms=completed - sent if sent is not None and completed is not None else None,
        **fields,
    )  # fmt: skip


def command_page(rows: Sequence[Row], limit: int) -> CommandList:
    last = rows[limit - 1] if len(rows) > limit else None
    cursor = encode_cursor(last["created_at"], last["command_id"]) if last else None
    return CommandList(commands=[command_from_row(r) for r in rows[:limit]], next_before=cursor)


# --- OCPP 2.0.1 sessions --------------------------------------------------------

_SESSION_COLUMNS = """charge_point_id, transaction_id, evse_id, connector_id, id_token,
    id_token_type, id_token_status, remote_start_id, reservation_id, started_at, meter_start,
    stopped_at, meter_stop, stopped_reason, energy_wh"""
# Latest started first, then by key; a session whose Started has not come
# (only later events have, so far) has no start and comes last.
_SESSION_ORDER = "started_at DESC NULLS LAST, charge_point_id DESC, transaction_id DESC"


def encode_session_cursor(started_at: datetime | None, cp: str, transaction_id: str) -> str:
    raw = msgspec.json.encode([_text(started_at), cp, transaction_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_session_cursor(cursor: str) -> tuple[datetime | None, str, str]:
    bad = q.InvalidInput(f"before is not a cursor this API gave out: {cursor!r}")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, cp, tid = msgspec.json.decode(raw, type=tuple[str | None, str, str])
        when = datetime.fromisoformat(at) if at is not None else None
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise bad from None
    if when is not None and when.tzinfo is None:
        raise bad
    return when, cp, tid


def sessions_query(
    *,
    charge_point_id: str | None = None,
    id_token: str | None = None,
    active: bool | None = None,
    started_from: datetime | None = None,
    started_to: datetime | None = None,
    limit: int = 100,
    before: str | None = None,
) -> tuple[str, list[object]]:
    """SQL and arguments for a page of 2.0.1 sessions in :data:`_SESSION_ORDER`,
    one row more than ``limit`` to tell whether there is more."""
    where = _transaction_filters(limit, charge_point_id, ("id_token", id_token), active,
                                 started_from, started_to)  # fmt: skip
    if before is not None:
        at, cp, tid = decode_session_cursor(before)
        if at is None:  # within the sessions without a start
            where.add(
                "started_at IS NULL AND (charge_point_id, transaction_id) < ({}, {})", cp, tid
            )
        else:
            t = where.arg(at)
            where.add(f"(started_at < {t} OR started_at IS NULL OR (started_at = {t}"
                      " AND (charge_point_id, transaction_id) < ({}, {})))", cp, tid)  # fmt: skip
    sql = (
        f"SELECT {_SESSION_COLUMNS} FROM transactions_v201 {where.sql()}"
        f" ORDER BY {_SESSION_ORDER} LIMIT {where.arg(limit + 1)}"
    )
    return sql, where.args


def session_fields(row: Row) -> dict[str, Any]:
    return {
        "charge_point_id": row["charge_point_id"],
        "transaction_id": row["transaction_id"],
        "active": row["stopped_at"] is None,
        "evse_id": row["evse_id"],
        "connector_id": row["connector_id"],
        "id_token": row["id_token"],
        "id_token_type": row["id_token_type"],
        "id_token_status": row["id_token_status"],
        "remote_start_id": row["remote_start_id"],
        "reservation_id": row["reservation_id"],
        "start_timestamp": _text(row["started_at"]),
        "meter_start": row["meter_start"],
        "stop_timestamp": _text(row["stopped_at"]),
        "meter_stop": row["meter_stop"],
        "stopped_reason": row["stopped_reason"],
        "energy_wh": row["energy_wh"],
    }


def session_page(rows: Sequence[Row], limit: int) -> TransactionV201List:
    found = [TransactionV201(**session_fields(r)) for r in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    cursor = (
        encode_session_cursor(last["started_at"], last["charge_point_id"], last["transaction_id"])
        if last is not None
        else None
    )
    return TransactionV201List(transactions=found, next_before=cursor)


SESSION_BY_KEY = (
    f"SELECT {_SESSION_COLUMNS} FROM transactions_v201"
    " WHERE charge_point_id = $1 AND transaction_id = $2"
)
SESSION_EVENTS = """SELECT seq_no, event_type, trigger_reason, occurred_at, offline,
    charging_state, id_token FROM transaction_events
    WHERE charge_point_id = $1 AND transaction_id = $2 ORDER BY seq_no"""
# 2.0.1 spells a sampled value otherwise: a number, scaled by its
# unitOfMeasure's multiplier (a power of ten) here so that it reads in its
# unit as 1.6's do; its signature beside it rather than in its place.
SESSION_METER_VALUES = """SELECT m.sampled_at, m.connector_id,
    CASE WHEN coalesce((s->'unitOfMeasure'->>'multiplier')::int, 0) = 0 THEN s->>'value'
         ELSE trim_scale((s->>'value')::numeric
                         * power(10::numeric, (s->'unitOfMeasure'->>'multiplier')::int))::text
    END AS value,
    s->>'measurand' AS measurand, s->>'phase' AS phase, s->>'location' AS location,
    s->'unitOfMeasure'->>'unit' AS unit, s->>'context' AS context, NULL AS format,
    s->'signedMeterValue' AS signed
    FROM meter_values m, json_array_elements(m.sampled_values) WITH ORDINALITY AS e(s, n)
    WHERE m.transaction_ref = $1 AND m.charge_point_id = $2
    ORDER BY m.sampled_at, m.record_id, m.seq, e.n LIMIT $3"""


def session_event(row: Row) -> TransactionEventRecord:
    return TransactionEventRecord(
        seq_no=row["seq_no"], event_type=row["event_type"], trigger_reason=row["trigger_reason"],
        occurred_at=clock.stored(row["occurred_at"]), offline=row["offline"],
        charging_state=row["charging_state"], id_token=row["id_token"],
    )  # fmt: skip


def live_session(cp: str, transaction_id: str, t: dict[str, str]) -> TransactionV201Detail:
    """A session as hot state holds it (its ``ocpp:cp:{id}:txn:{tid}``
    hash), before the archiver has written it."""
    return TransactionV201Detail(
        charge_point_id=cp, transaction_id=transaction_id, active="ended_at" not in t,
        evse_id=q.int_or_none(t.get("evse_id")), connector_id=q.int_or_none(t.get("connector_id")),
        id_token=t.get("id_token"), id_token_type=t.get("id_token_type"),
        remote_start_id=q.int_or_none(t.get("remote_start_id")),
        reservation_id=q.int_or_none(t.get("reservation_id")),
        start_timestamp=t.get("started_at"), stop_timestamp=t.get("ended_at"),
        stopped_reason=t.get("stopped_reason"), archived=False,
    )  # fmt: skip


CSV_COLUMNS = ("transaction_id", "charge_point_id", "connector_id", "id_tag", "id_tag_status",
               "reservation_id", "active", "start_timestamp", "meter_start", "stop_timestamp",
               "meter_stop", "stop_reason", "stop_id_tag", "energy_wh", "energy_kwh")  # fmt: skip
# A cell a spreadsheet would run as a formula (an idTag or stop reason is
# the charger's text): quoted with a leading apostrophe, as OWASP advises.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


SESSION_CSV_COLUMNS = ("charge_point_id", "transaction_id", "evse_id", "connector_id",
                       "id_token", "id_token_type", "id_token_status", "remote_start_id",
                       "reservation_id", "active", "start_timestamp", "meter_start",
                       "stop_timestamp", "meter_stop", "stopped_reason", "energy_wh",
                       "energy_kwh")  # fmt: skip


def _csv(columns: Sequence[str], rows: Sequence[Transaction | TransactionV201]) -> str:
    """A header row, then one row per transaction; energy in Wh and in kWh
    (exact, three decimals); empty cells for nulls."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for t in rows:
        kwh = format(Decimal(t.energy_wh).scaleb(-3), "f") if t.energy_wh is not None else None
        row = msgspec.structs.asdict(t) | {"energy_kwh": kwh}
        writer.writerow([_cell(row[c]) for c in columns])
    return out.getvalue()


def transactions_csv(transactions: Sequence[Transaction]) -> str:
    return _csv(CSV_COLUMNS, transactions)


def sessions_csv(sessions: Sequence[TransactionV201]) -> str:
    return _csv(SESSION_CSV_COLUMNS, sessions)


# --- the reads ---------------------------------------------------------------


async def list_transactions(
    history: History,
    *,
    charge_point_id: str | None = None,
    id_tag: str | None = None,
    active: bool | None = None,
    started_from: datetime | None = None,
    started_to: datetime | None = None,
    limit: int = 100,
    before: int | None = None,
) -> TransactionList:
    """Transactions newest first, filtered; ``next_before`` when there are more."""
    sql, args = transactions_query(
        charge_point_id=charge_point_id, id_tag=id_tag, active=active, started_from=started_from,
        started_to=started_to, limit=limit, before=before,
    )  # fmt: skip
    return transaction_page(await history.fetch(sql, *args), limit)


async def get_transaction(history: History, redis: Redis, transaction_id: int) -> TransactionDetail:
    """A transaction and its meter values from the history; one the
    archiver has not written yet from Redis, without meter values."""
    if not 1 <= transaction_id <= MAX_ID:
        raise q.NotFound(f"transaction {transaction_id} does not exist")
    rows = await history.fetch(TRANSACTION_BY_ID, transaction_id)
    if not rows:
        live = await q.live_transaction(redis, transaction_id)
        if live is None:
            raise q.NotFound(f"transaction {transaction_id} does not exist")
        return live
    fields = transaction_fields(rows[0])
    values = await history.fetch(
        METER_VALUES, transaction_id, fields["charge_point_id"], MAX_METER_VALUES + 1
    )
    return TransactionDetail(
        **fields,
        meter_values=[meter_value(v) for v in values[:MAX_METER_VALUES]],
        meter_values_truncated=len(values) > MAX_METER_VALUES,
    )


async def list_sessions(
    history: History,
    *,
    charge_point_id: str | None = None,
    id_token: str | None = None,
    active: bool | None = None,
    started_from: datetime | None = None,
    started_to: datetime | None = None,
    limit: int = 100,
    before: str | None = None,
) -> TransactionV201List:
    """OCPP 2.0.1 sessions, latest started first, filtered."""
    sql, args = sessions_query(
        charge_point_id=charge_point_id, id_token=id_token, active=active,
        started_from=started_from, started_to=started_to, limit=limit, before=before,
    )  # fmt: skip
    return session_page(await history.fetch(sql, *args), limit)


async def get_session(
    history: History, redis: Redis, charge_point_id: str, transaction_id: str
) -> TransactionV201Detail:
    """A 2.0.1 session with its events and meter values from the history;
    one the archiver has not written yet, from Redis without them."""
    rows = await history.fetch(SESSION_BY_KEY, charge_point_id, transaction_id)
    if not rows:
        raw: dict[bytes, bytes] = await redis.hgetall(  # type: ignore[assignment]
            keys.transaction_v201(charge_point_id, transaction_id)
        )
        if not raw:
            raise q.NotFound(f"charger {charge_point_id!r} has no transaction {transaction_id!r}")
        return live_session(charge_point_id, transaction_id, q.text_fields(raw))
    events = await history.fetch(SESSION_EVENTS, charge_point_id, transaction_id)
    values = await history.fetch(
        SESSION_METER_VALUES, transaction_id, charge_point_id, MAX_METER_VALUES + 1
    )
    return TransactionV201Detail(
        **session_fields(rows[0]),
        events=[session_event(e) for e in events],
        meter_values=[meter_value(v) for v in values[:MAX_METER_VALUES]],
        meter_values_truncated=len(values) > MAX_METER_VALUES,
    )


async def list_events(
    history: History,
    charge_point_id: str,
    *,
    kind: str | None = None,
    occurred_from: datetime | None = None,
    occurred_to: datetime | None = None,
    limit: int = 100,
    before: str | None = None,
) -> ChargerEventList:
    sql, args = events_query(
        charge_point_id, kind=kind, occurred_from=occurred_from, occurred_to=occurred_to,
        limit=limit, before=before,
    )  # fmt: skip
    return event_page(charge_point_id, await history.fetch(sql, *args), limit)


async def list_commands(
    history: History, charge_point_id: str, *, limit: int = 100, before: str | None = None
) -> CommandList:
    sql, args = commands_query(charge_point_id, limit=limit, before=before)
    return command_page(await history.fetch(sql, *args), limit)


async def get_command(history: History, queue: CommandQueue, command_id: str) -> Command:
    """A command from Redis while it keeps it (live), else from the history."""
    record = await queue.get(command_id)
    if record is not None:
        return q.command_view(record)
    if history.configured:
        rows = await history.fetch(COMMAND_BY_ID, command_id)
        if rows:
            return command_from_row(rows[0])
    raise q.NotFound(f"command {command_id!r} does not exist (or has expired)")
