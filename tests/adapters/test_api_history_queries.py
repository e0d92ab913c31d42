"""The pure part of the history reads, without a server: what SQL the
filters make, cursors, rows to Structs, and the CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters import api_history as h
from adapters import api_queries as q
from adapters.api_models import Transaction
from adapters.history_db import History, shown

T0 = datetime(2024, 1, 1, 10, tzinfo=UTC)


def test_filters_are_placeholders_never_text() -> None:
    hostile = "CP1'; DROP TABLE transactions; --"
    sql, args = h.transactions_query(
        charge_point_id=hostile, id_tag="TAG", active=False, started_from=T0,
        started_to=T0 + timedelta(days=1), limit=10, before=42,
    )  # fmt: skip
    assert hostile not in sql and "TAG" not in sql
    assert args == [hostile, "TAG", T0, T0 + timedelta(days=1), 42, 11]
    assert "charge_point_id = $1 AND id_tag = $2 AND stopped_at IS NOT NULL" in sql
    assert "started_at >= $3 AND started_at < $4 AND transaction_id < $5" in sql
    assert sql.endswith("ORDER BY transaction_id DESC, charge_point_id DESC LIMIT $6")
    bare, no_args = h.transactions_query()
    assert "WHERE" not in bare and no_args == [101]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": q.MAX_LIMIT + 1}, "limit"),
        ({"before": 0}, "before"),
        ({"started_from": datetime(2024, 1, 1)}, "time zone"),
    ],
)
def test_bad_filters_are_invalid_input(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(q.InvalidInput, match=says):
        h.transactions_query(**kwargs)  # type: ignore[arg-type]


@given(
    at=st.datetimes(timezones=st.just(UTC)),
    key=st.text(max_size=40),
    seq=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_a_cursor_gives_back_what_it_was_made_of(at: datetime, key: str, seq: int) -> None:
    assert h.decode_cursor(h.encode_cursor(at, key, seq)) == (at, key, seq)


@pytest.mark.parametrize("cursor", ["", "x", "bm9wZQ", h.encode_cursor(T0, "k")[:-3] + "!!!"])
def test_a_cursor_not_given_out_is_invalid_input(cursor: str) -> None:
    with pytest.raises(q.InvalidInput, match="before"):
        h.decode_cursor(cursor)


def test_events_page_past_the_last_row_of_the_previous() -> None:
    sql, args = h.events_query("CP1", kind="status", limit=2, before=h.encode_cursor(T0, "r", 3))
    assert "(occurred_at, record_id, seq) < ($3, $4, $5)" in sql
    assert args == ["CP1", "status", T0, "r", 3, 3]
    rows = [
        {"record_id": "r", "seq": n, "kind": "status", "occurred_at": T0, "connector_id": 1,
         "details": '{"status": "Available"}'}
        for n in (2, 1, 0)
    ]  # fmt: skip
    page = h.event_page("CP1", rows, 2)
    assert [e.seq for e in page.events] == [2, 1]
    assert page.events[0].details == {"status": "Available"}
    assert page.next_before is not None and h.decode_cursor(page.next_before) == (T0, "r", 1)
    assert h.event_page("CP1", rows[:2], 2).next_before is None


def _command(outcome: object, state: str = "answered") -> dict[str, object]:
    return {"command_id": "c", "charge_point_id": "CP1", "action": "Reset",
            "request": '{"type": "Soft"}', "state": state, "outcome": outcome,
            "created_at": T0, "sent_at": T0, "completed_at": T0 + timedelta(seconds=1)}  # fmt: skip


def test_a_commands_outcome_in_either_shape() -> None:
    as_record = h.command_from_row(_command('{"result": "{\\"status\\": \\"Accepted\\"}"}'))
    assert as_record.result == {"status": "Accepted"} and as_record.round_trip_ms == 1000
    assert as_record.request == {"type": "Soft"}
    bare = h.command_from_row(_command('{"status": "Rejected"}'))
    assert bare.status == "Rejected" and bare.result is None
    payload = h.command_from_row(_command('{"configurationKey": []}'))
    assert payload.result == {"configurationKey": []}
    failed = h.command_from_row(_command('{"error_code": "NotSupported"}', "failed"))
    assert failed.error_code == "NotSupported" and failed.result is None


def test_csv_quotes_formulas_and_gives_kwh_exactly() -> None:
    rows = [
        Transaction(transaction_id=1, active=False, id_tag="@SUM(A1)", stop_reason="-x",
                    energy_wh=1, meter_start=-5),
        Transaction(transaction_id=2, active=True, charge_point_id='CP,"1"\n'),
    ]  # fmt: skip
    parsed = list(csv.DictReader(io.StringIO(h.transactions_csv(rows))))
    assert parsed[0]["id_tag"] == "'@SUM(A1)" and parsed[0]["stop_reason"] == "'-x"
    assert parsed[0]["energy_kwh"] == "0.001" and parsed[0]["meter_start"] == "-5"
    assert parsed[1]["charge_point_id"] == 'CP,"1"\n' and parsed[1]["active"] == "true"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://ocpp:s3cret@db:5432/ocpp", "postgresql://ocpp:***@db:5432/ocpp"),
        ("postgresql://ocpp:p%2Fw@db/ocpp?password=x&sslmode=require", "postgresql://ocpp:***@db/ocpp"),
        ("postgres://db/ocpp", "postgres://db/ocpp"),
        ("postgresql://u@[::1]:5433/ocpp", "postgresql://u@[::1]:5433/ocpp"),
    ],
)  # fmt: skip
def test_the_database_is_shown_without_its_password(url: str, expected: str) -> None:
    assert shown(url) == expected


@pytest.mark.parametrize(
    "url", ["redis://h/0", "postgresql://u:p/w#x@h/db", "postgresql://h:port/db", "nonsense"]
)
def test_a_url_that_is_not_postgresql_is_refused_without_quoting_it(url: str) -> None:
    with pytest.raises(ValueError, match="DATABASE_URL is not a valid") as raised:
        History(url)
    assert url not in str(raised.value)


def test_times_with_any_offset_are_taken() -> None:
    east = h.parse_time("from", "2024-01-01T12:00:00+02:00")
    assert east == T0 and east is not None and east.utcoffset() == timedelta(hours=2)
    assert h.parse_time("to", None) is None
    with pytest.raises(q.InvalidInput, match="to is not an RFC 3339 time"):
        h.parse_time("to", "yesterday")
