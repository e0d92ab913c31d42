"""The statistics bench.telemetry's verdict rests on."""

from __future__ import annotations

from bench.telemetry import Run, median_interval, summary


def test_the_median_interval_is_the_order_statistics_around_it() -> None:
    values = [float(n) for n in range(80)]  # sorted or not, the same
    # k = floor((80 - 17.5) / 2) - 1: 96.7% exact coverage (binomial)
    assert median_interval(list(reversed(values))) == (30.0, 49.0)
    assert median_interval([2.0, 1.0]) == (1.0, 2.0)  # few values: their whole range
    assert median_interval([5.0]) == (5.0, 5.0)


def pairs(ratios: list[float]) -> list[Run]:
    return [run for r in ratios for run in (Run(False, 100, 1.0), Run(True, 100, 1 / r))]


def test_the_verdict_says_whether_the_interval_clears_the_target() -> None:
    text, ok = summary(pairs([0.95, 0.9, 0.97, 0.93, 0.96, 0.94, 0.92, 0.95]))
    assert ok and text.endswith("-> met, clear of the noise")
    text, ok = summary(pairs([0.99, 0.8, 0.97, 0.93, 0.96, 0.85, 0.82, 0.95]))
    assert ok and text.endswith("-> met, within the noise")
    text, ok = summary(pairs([0.85, 0.8, 0.87, 0.83, 0.86, 0.84, 0.82, 0.85]))
    assert not ok and text.endswith("-> MISSED, clear of the noise")


def test_two_pairs_make_no_claim_about_the_noise() -> None:
    text, ok = summary(pairs([1.087, 1.219]))
    assert ok and text.endswith("-> met, too few pairs to tell it from the noise")
