"""Timestamps as stored and sent, at the ends of what a datetime holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from processor import clock

offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.datetimes(timezones=offsets | st.none())


@given(instants, instants)
def test_stored_text_orders_as_the_instants_do(a: datetime, b: datetime) -> None:
    # Not for instants a datetime cannot hold in UTC: those are clamped.
    ua, ub = clock.utc(a), clock.utc(b)
    assert len(clock.stored(a)) == len("2024-01-01T12:00:00.000000Z")
    assert (clock.stored(a) < clock.stored(b)) == (ua < ub)


def test_years_before_1000_are_padded() -> None:
    assert clock.stored(datetime(999, 1, 2, tzinfo=UTC)) == "0999-01-02T00:00:00.000000Z"
    assert clock.wire(datetime(5, 1, 2, 3, 4, 5, 678901)) == "0005-01-02T03:04:05.678Z"


def test_an_offset_past_the_ends_of_time_clamps() -> None:
    late = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5)))
    early = datetime(1, 1, 1, 0, 1, tzinfo=timezone(timedelta(hours=5)))
    assert clock.utc(late) == datetime.max.replace(tzinfo=UTC)
    assert clock.utc(early) == datetime.min.replace(tzinfo=UTC)
    assert clock.parse("9999-12-31T23:59:59-23:59") == datetime.max.replace(tzinfo=UTC)
    assert clock.epoch_ms(late) > clock.epoch_ms(datetime(9999, 1, 1, tzinfo=UTC))


def test_wire_has_milliseconds() -> None:
    assert clock.wire(datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)) == (
        "2024-01-01T12:00:00.123Z"
    )
    east = datetime(2024, 1, 1, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    assert clock.stored(east) == "2024-01-01T12:00:00.000000Z"


@given(st.datetimes())
def test_the_utc_fast_path_writes_what_the_general_one_does(naive: datetime) -> None:
    # A naive datetime takes the general path, the same instant in UTC the fast one.
    assert clock.stored(naive.replace(tzinfo=UTC)) == clock.stored(naive)
