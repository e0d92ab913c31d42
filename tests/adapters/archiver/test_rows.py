"""History entries into rows: keys, order, and what PostgreSQL cannot hold."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import pytest

from adapters.archiver import rows
from adapters.archiver.writer import expired
from processor import history

CP = "CP-1"
T = "2024-01-01T12:00:00.000000Z"


def entry(*records: history.Record, inbound: str = "1-0") -> dict[str, bytes]:
    return {inbound: history.encode(list(records))}


def lua(**fields: str) -> bytes:
    flat = [x for kv in fields.items() for x in kv]
    return msgspec.msgpack.encode(flat)


def reading(tid: int | None = 7, n: int = 2, at: str = T) -> history.MeterReading:
    values = [{"value": str(i), "measurand": "Voltage", "phase": "L1", "unit": "V"}
              for i in range(n)]  # fmt: skip
    return history.MeterReading(CP, 1, tid, at, msgspec.json.encode(values))


def test_every_meter_value_is_a_row_keyed_by_its_content() -> None:
    got = rows.gather([("5-0", entry(reading(n=3), reading(n=2), reading(n=3)))])
    columns = got.meter_values.columns
    cps, connectors, times, reading_keys, tids, values, record_ids, seqs, refs = columns
    assert (record_ids, seqs) == (["5-0"] * 3, [0, 1, 2])
    assert (tids, refs) == ([7] * 3, [None] * 3)
    assert json.loads(values[1]) == [
        {"value": "0", "measurand": "Voltage", "phase": "L1", "unit": "V"},
        {"value": "1", "measurand": "Voltage", "phase": "L1", "unit": "V"},
    ]
    # The first and third readings are the same: one key, one row.
    assert len(set(zip(cps, connectors, times, reading_keys, strict=True))) == 2
    # The same reading in another entry (a charger's retry) has the same key.
    again = rows.gather([("6-0", entry(reading(n=3)))])
    assert again.meter_values.columns[3] == reading_keys[:1]
    # Any difference, the transaction included, is another reading.
    assert rows.reading_key(7, b'[{"value":"1"}]') != rows.reading_key(7, b'[{"value":"2"}]')
    assert rows.reading_key(7, b'[{"value":"1"}]') != rows.reading_key(8, b'[{"value":"1"}]')
    assert rows.reading_key(None, b'[{"value":"1"}]') != rows.reading_key(7, b'[{"value":"1"}]')


def test_each_field_numbers_its_rows_from_its_own_place() -> None:
    fields = {**entry(reading(n=2), inbound="1-0"), **entry(reading(n=1), inbound="1-1")}
    event = history.ChargerEvent(CP, "BootNotification", T, None, {"vendor": "Acme"})
    fields["1-2"] = history.encode([event])
    got = rows.gather([("9-0", fields)])
    # A field's rows keep their keys whether it is written with the rest
    # or alone (set apart from a refused neighbour).
    step = rows.FIELD_POSITIONS
    assert got.meter_values.columns[7] == [0, step]
    assert got.events.columns[1] == [2 * step]
    alone = rows.Rows()
    rows.add(alone, "9-0", fields, only={"1-2"})
    assert alone.events.columns == got.events.columns
    assert json.loads(got.events.columns[6][0]) == {"vendor": "Acme"}


def test_a_transaction_is_one_row_whatever_its_retries() -> None:
    start = history.TransactionStarted(CP, 7, 1, "TAG", None, T, 100, "Accepted")
    retry = history.TransactionStarted(CP, 7, 1, "TAG", None, T, 100, "Accepted")
    stop = history.TransactionStopped(CP, 7, T, 900, "Local", None)
    other = history.TransactionStopped(CP, 7, T, 950, "Remote", None)
    got = rows.gather([("1-0", entry(start, stop)), ("2-0", entry(retry, other))])
    assert list(got.starts) == [(CP, 7)]
    # The first stop is kept, as Redis keeps the first it commits.
    assert got.stops[(CP, 7)][3] == 900


def test_commands_end_with_their_outcome_whatever_the_order() -> None:
    queued = lua(command_id="c1", charge_point_id=CP, action="Reset", state="queued",
                 request='{"type": "Soft"}', created_at_ms="1000")  # fmt: skip
    answered = lua(command_id="c1", charge_point_id=CP, action="Reset", state="answered",
                   request='{"type": "Soft"}', created_at_ms="1000", sent_at_ms="1001",
                   completed_at_ms="1050", result='{"status": "Accepted"}', status="Accepted",
                   round_trip_ms="49")  # fmt: skip
    for order in ([queued, answered], [answered, queued]):
        fields = {f"!command:{i}": blob for i, blob in enumerate(order)}
        got = rows.gather([("1-0", fields)])
        row = got.commands["c1"]
        assert row[4] == "answered"
        assert json.loads(row[5]) == {"status": "Accepted", "round_trip_ms": "49",
                                      "result": {"status": "Accepted"}}  # fmt: skip
        assert json.loads(row[3]) == {"type": "Soft"}


def test_a_broken_or_deep_reply_is_kept_as_text() -> None:
    deep = "[" * 10_000 + "]" * 10_000
    for result in ('{"status": ', deep):
        blob = lua(command_id="c", charge_point_id=CP, action="Reset", state="failed",
                   result=result)  # fmt: skip
        got = rows.gather([("1-0", {"!command:0": blob})])
        assert json.loads(got.commands["c"][5])["result"] == result


def test_anomalies_found_by_lua_are_timed_by_their_entry() -> None:
    blob = lua(kind="StopTransaction for a closed transaction", key="ocpp:txn:7",
               meter_stop="5")  # fmt: skip
    got = rows.gather([("1704110400000-3", {"!anomaly:0": blob})])
    _, _, cp, kind, at, details = (c[0] for c in got.anomalies.columns)
    assert (cp, kind) == (None, "StopTransaction for a closed transaction")
    assert at == "2024-01-01T12:00:00.000000Z"
    assert json.loads(details) == {"key": "ocpp:txn:7", "meter_stop": "5"}


def test_nul_characters_are_replaced_not_fatal() -> None:
    start = history.TransactionStarted(CP, 7, 1, "TA\x00G", None, T, 100, "Accepted")
    event = history.ChargerEvent(CP, "DataTransfer", T, None, {"data": "a\x00b"})
    got = rows.gather([("1-0", entry(start, event, reading(n=1)))])
    assert got.starts[(CP, 7)][3] == "TA\ufffdG"
    assert json.loads(got.events.columns[6][0]) == {"data": "a\ufffdb"}


def test_dead_letters_keep_their_bytes() -> None:
    dead = history.DeadLetter("3-0", None, "not JSON", b"\xff{", T)
    got = rows.gather([("1-0", entry(dead))])
    assert got.dead_letters["3-0"][3] == b"\xff{"


@pytest.mark.parametrize("fields", [
    {"1-0": b"\xc1"},  # not MessagePack
    {"1-0": msgspec.msgpack.encode([["nope", 1]])},  # no such record kind
    {"!mystery:0": lua(a="b")},
])  # fmt: skip
def test_what_is_not_history_raises(fields: dict[str, bytes]) -> None:
    with pytest.raises((msgspec.DecodeError, ValueError)):
        rows.gather([("1-0", fields)])


def test_partitions_past_the_retention() -> None:
    names = ["meter_values_2024_01", "meter_values_2024_06", "meter_values_2024_07"]
    now = datetime(2024, 12, 15, tzinfo=UTC)
    # Six months before December: June is kept whole, anything before goes.
    assert expired(names, 6, now) == ["meter_values_2024_01"]
    assert expired(names, 5, now) == ["meter_values_2024_01", "meter_values_2024_06"]
    assert expired(names, 12, now) == []


def test_a_201_event_that_says_nothing_of_its_session_writes_no_session_row() -> None:
    said = history.TransactionEvent(
        CP,
        "TX",
        0,
        "Started",
        "Authorized",
        T,
        False,
        1,
        1,
        "T1",
        "ISO14443",
        "Accepted",
        None,
        None,
        None,
        None,
        1000,
    )
    periodic = history.TransactionEvent(CP, "TX", 1, "Updated", "MeterValuePeriodic", T, False,
                                        None, None, None, None, None, None, None, None, None,
                                        None)  # fmt: skip
    got = rows.gather([("5-0", entry(periodic))])
    assert (len(got.transaction_events), len(got.sessions)) == (1, 0)
    got = rows.gather([("5-0", entry(periodic, said))])
    assert [s.row()[:4] for s in got.sessions.values()] == [(CP, "TX", 1, 1)]


def test_a_transaction_id_longer_than_blake2s_key_is_still_keyed() -> None:
    """36 characters may be 108 bytes of UTF-8: blake2b takes keys of 64."""
    long_id = "ж" * 36
    assert rows.reading_key(long_id, b"[]") != rows.reading_key("ж" * 35, b"[]")
    assert rows.reading_key(7, b"[]") == rows.reading_key("7", b"[]")  # short keys as before
