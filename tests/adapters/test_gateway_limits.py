"""The limits on failed charger logins (``adapters/gateway_limits.py``), on a
clock the tests move by hand. ``tests/adapters/test_gateway.py`` runs them in
a real gateway."""

from __future__ import annotations

import pytest

from adapters.gateway_limits import FailedLogins, LogBudget, source


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, max_failures: int = 10, **kw: int) -> FailedLogins:
    return FailedLogins(max_failures, 60.0, clock=clock, **kw)


def test_the_nth_failure_refuses_the_source_for_a_window() -> None:
    clock = Clock()
    logins = limiter(clock)
    for _ in range(9):
        assert logins.retry_after("192.0.2.1") is None
        assert not logins.failed("192.0.2.1")
        clock.now += 1
    assert logins.retry_after("192.0.2.1") is None
    assert logins.failed("192.0.2.1")  # the 10th
    # Refused whatever it sends next, the right password included: the
    # gateway asks before checking credentials.
    assert logins.retry_after("192.0.2.1") == 60.0
    clock.now += 59.5
    assert logins.retry_after("192.0.2.1") == pytest.approx(0.5)


def test_another_source_is_unaffected() -> None:
    clock = Clock()
    logins = limiter(clock)
    for _ in range(10):
        logins.failed("192.0.2.1")
    assert logins.retry_after("192.0.2.1") is not None
    assert logins.retry_after("192.0.2.2") is None
    assert not logins.failed("192.0.2.2")


def test_once_the_window_passes_the_source_starts_afresh() -> None:
    clock = Clock()
    logins = limiter(clock)
    for _ in range(10):
        logins.failed("192.0.2.1")
    clock.now += 60
    assert logins.retry_after("192.0.2.1") is None
    assert len(logins) == 0  # forgotten, not kept around
    for _ in range(9):
        assert not logins.failed("192.0.2.1")
    assert logins.retry_after("192.0.2.1") is None


def test_failures_further_apart_than_the_window_do_not_add_up() -> None:
    clock = Clock()
    logins = limiter(clock)
    for _ in range(9):
        logins.failed("192.0.2.1")
    clock.now += 60
    assert not logins.failed("192.0.2.1")
    assert logins.retry_after("192.0.2.1") is None


def test_zero_turns_the_limit_off() -> None:
    logins = limiter(Clock(), max_failures=0)
    assert not any(logins.failed("192.0.2.1") for _ in range(1000))
    assert logins.retry_after("192.0.2.1") is None and len(logins) == 0


@pytest.mark.parametrize(
    ("host", "counted_as"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::9", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("", ""),
    ],
)
def test_sources(host: str, counted_as: str) -> None:
    assert source(host) == counted_as


def test_an_ipv6_host_cannot_escape_by_changing_address() -> None:
    logins = limiter(Clock())
    for i in range(10):
        logins.failed(f"2001:db8::{i + 1:x}")
    assert logins.retry_after("2001:db8::ffff") is not None
    assert logins.retry_after("2001:db8:0:1::1") is None


def test_memory_is_bounded_and_a_source_still_trying_keeps_its_place() -> None:
    clock = Clock()
    logins = limiter(clock, max_failures=2, max_sources=100)
    logins.failed("198.51.100.1")
    logins.failed("198.51.100.1")
    for i in range(10_000):
        logins.failed(f"10.{i // 256 % 256}.{i % 256}.1")
        if i % 50 == 0:
            assert logins.retry_after("198.51.100.1") is not None  # it keeps trying
        assert len(logins) <= 100
    assert logins.retry_after("198.51.100.1") is not None


def test_expired_sources_make_room_first() -> None:
    clock = Clock()
    logins = limiter(clock, max_sources=3)
    logins.failed("192.0.2.1")
    clock.now += 30
    logins.failed("192.0.2.2")
    logins.failed("192.0.2.3")
    clock.now += 31  # the first has expired, the others have not
    logins.failed("192.0.2.4")
    assert len(logins) == 3
    # The live ones kept their counts: nine more make ten for each.
    assert [logins.failed("192.0.2.2") for _ in range(9)][-1]
    assert [logins.failed("192.0.2.3") for _ in range(9)][-1]


def test_the_log_budget_holds_back_a_flood_and_says_how_much() -> None:
    clock = Clock()
    budget = LogBudget(lines=3, interval_s=10.0, clock=clock)
    assert [budget.take() for _ in range(8)] == [0, 0, 0, None, None, None, None, None]
    clock.now += 9.9
    assert budget.take() is None
    clock.now += 0.1
    assert budget.take() == 6  # the six left out before it
    assert budget.take() == 0
