"""The processor's per-batch metrics, kept out of the SDK until it collects.

An SDK instrument call made once a batch runs cold, ~40 µs: several times
what the rest of a batch's telemetry costs. So ``ocpp.messages`` is an
observable counter over totals kept in a dict, and the values of the two
per-batch histograms wait as plain floats for its callback, which records
them in one go. The SDK runs the callbacks before it collects the
histograms, so they make the same collection (were that to change, the
next). Observable instruments are one per name and meter, the SDK keeping
the first callback, so every consumer on a meter shares one
:class:`BatchMetrics` (:func:`for_meter`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import metrics

# messaging.*.duration advice from the semantic conventions, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
LATENCY_BUCKETS = (0.001, 0.0025, *DURATION_BUCKETS, 30, 60, 300)
PENDING_LIMIT = 10_000  # histogram values waiting for a collection; then recorded at once

Key = tuple[str, str, int]  # (action, outcome, message type)


class BatchMetrics:
    """One meter's ``ocpp.messages``, ``messaging.process.duration`` and
    ``ocpp.message.latency``: what batches add, until a collection."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._totals: dict[Key, int] = {}
        # Duration values by their attributes (a consumer's stream and group), by identity.
        self._durations: dict[int, tuple[dict[str, Any], list[float]]] = {}
        self._latencies: dict[str, list[float]] = {}  # by action
        self.pending = 0  # values waiting
        self._lock = threading.Lock()  # collections run in the reader's thread
        self._labels: dict[Key, dict[str, Any]] = {}
        meter.create_observable_counter(
            "ocpp.messages", [self._collect], "{message}", "messages handled, by action and outcome"
        )
        self._handling = meter.create_histogram(
            "messaging.process.duration", "s",
            "time from reading a batch to its commit; one measurement per batch",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )  # fmt: skip
        self._latency = meter.create_histogram(
            "ocpp.message.latency", "s",
            "envelope timestamp to commit, per batch and action: its oldest message",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )  # fmt: skip

    def add(
        self,
        counts: Mapping[Key, int],
        duration: float,
        duration_attrs: dict[str, Any],
        latencies: Sequence[tuple[str, float]],
    ) -> None:
        """A batch's messages by key, its duration and its latencies by action."""
        with self._lock:
            totals = self._totals
            for key, n in counts.items():
                totals[key] = totals.get(key, 0) + n
            waiting = self._durations.get(id(duration_attrs))
            if waiting is None:
                waiting = self._durations[id(duration_attrs)] = (duration_attrs, [])
            waiting[1].append(duration)
            for action, latency in latencies:
                self._latencies.setdefault(action, []).append(latency)
            self.pending += 1 + len(latencies)
            full = self.pending > PENDING_LIMIT
        if full:  # nobody collects (a pull exporter unscraped)
            self.record_pending()

    def record_pending(self) -> None:
        with self._lock:
            durations, self._durations = self._durations, {}
            latencies, self._latencies = self._latencies, {}
            self.pending = 0
        for attrs, values in durations.values():
            for value in values:
                self._handling.record(value, attrs)
        for action, values in latencies.items():
            labels = {"ocpp.action": action}
            for value in values:
                self._latency.record(value, labels)

    def _collect(self, _: metrics.CallbackOptions) -> list[metrics.Observation]:
        self.record_pending()
        with self._lock:
            totals = list(self._totals.items())
        return [metrics.Observation(n, self._label(key)) for key, n in totals]

    def _label(self, key: Key) -> dict[str, Any]:
        labels = self._labels.get(key)
        if labels is None:
            labels = {"ocpp.action": key[0], "ocpp.outcome": key[1], "ocpp.message_type": key[2]}
            self._labels[key] = labels
        return labels


_by_meter: weakref.WeakKeyDictionary[metrics.Meter, BatchMetrics] = weakref.WeakKeyDictionary()
_by_meter_lock = threading.Lock()


def for_meter(meter: metrics.Meter) -> BatchMetrics:
    """The :class:`BatchMetrics` of ``meter``, made on first use."""
    with _by_meter_lock:
        found = _by_meter.get(meter)
        if found is None:
            found = _by_meter[meter] = BatchMetrics(meter)
        return found
