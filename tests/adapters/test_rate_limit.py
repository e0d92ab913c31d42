"""The failure limiter on a clock the test moves."""

from __future__ import annotations

import pytest

from adapters.rate_limit import Failure, FailureLimiter, LogBudget, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_blocks_after_limit_failures_for_a_window(clock: Clock) -> None:
    limiter = FailureLimiter(limit=3, window_s=60, clock=clock)
    assert limiter.retry_after("a") == 0
    assert limiter.failed("a") == Failure(1, blocked=False)
    clock.now += 10
    assert limiter.failed("a") == Failure(2, blocked=False)
    assert limiter.retry_after("a") == 0
    clock.now += 10
    assert limiter.failed("a") == Failure(3, blocked=True)
    # Blocked a whole window from the failure that reached the limit.
    assert limiter.retry_after("a") == 60
    assert limiter.retry_after("b") == 0  # another address is unaffected
    clock.now += 59.5
    assert limiter.retry_after("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.retry_after("a") == 0
    # A fresh window: the count starts again.
    assert limiter.failed("a") == Failure(1, blocked=False)


def test_failures_spread_over_more_than_a_window_do_not_block(clock: Clock) -> None:
    limiter = FailureLimiter(limit=3, window_s=60, clock=clock)
    limiter.failed("a")
    limiter.failed("a")
    clock.now += 60
    assert limiter.failed("a") == Failure(1, blocked=False)
    assert limiter.retry_after("a") == 0


def test_memory_is_bounded_dropping_the_least_recently_failing(clock: Clock) -> None:
    limiter = FailureLimiter(limit=2, window_s=60, max_keys=3, clock=clock)
    for key in ("a", "b", "c"):
        limiter.failed(key)
        limiter.failed(key)
    limiter.failed("a")  # now the most recent
    limiter.failed("d")
    assert len(limiter) == 3
    assert limiter.retry_after("b") == 0  # forgotten
    assert limiter.retry_after("a") > 0 and limiter.retry_after("c") > 0
    for n in range(10_000):
        limiter.failed(f"k{n}")
    assert len(limiter) == 3


def test_settings_must_be_positive() -> None:
    for kwargs in ({"limit": 0}, {"window_s": 0}, {"max_keys": 0}):
        with pytest.raises(ValueError):
            FailureLimiter(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("testclient", "testclient"),
        (None, "unknown"),
        ("", "unknown"),
    ],
)
def test_client_key(host: str | None, key: str) -> None:
    assert client_key(host) == key


def test_a_blocked_client_still_trying_keeps_its_place(clock: Clock) -> None:
    limiter = FailureLimiter(limit=2, window_s=60, max_keys=100, clock=clock)
    limiter.failed("198.51.100.1")
    limiter.failed("198.51.100.1")
    for i in range(10_000):  # a flood of other clients failing once each
        limiter.failed(f"10.{i // 256 % 256}.{i % 256}.1")
        if i % 50 == 0:
            assert limiter.retry_after("198.51.100.1") > 0  # it keeps trying
        assert len(limiter) <= 100
    assert limiter.retry_after("198.51.100.1") > 0


def test_the_log_budget_holds_back_a_flood_and_says_how_much(clock: Clock) -> None:
    budget = LogBudget(lines=3, interval_s=10.0, clock=clock)
    assert [budget.take() for _ in range(8)] == [0, 0, 0, None, None, None, None, None]
    clock.now += 9.9
    assert budget.take() is None
    clock.now += 0.1
    assert budget.take() == 6  # the six left out before it
    assert budget.take() == 0
