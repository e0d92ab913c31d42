"""What ``ocpp-sim`` measures: messages, latency percentiles, errors, and the
summary it prints.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Tally:
    """One OCPP version's part of the fleet."""

    chargers: int = 0
    connected: int = 0  # now
    reached: int = 0  # ever connected
    sessions: int = 0
    remote_sessions: int = 0
    sent: int = 0

    def summary(self) -> dict[str, int]:
        return {"chargers": self.chargers, "connected": self.reached,
                "sessions_completed": self.sessions, "remote_sessions": self.remote_sessions,
                "messages_sent": self.sent}  # fmt: skip


@dataclass
class Stats:
    """Totals are the sums over ``by_protocol``, the counts per OCPP version."""

    by_protocol: dict[str, Tally] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    commands: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    interrupted: bool = False

    @classmethod
    def of(cls, protocols: list[str]) -> Stats:
        """For a fleet whose chargers speak ``protocols``, one each."""
        stats = cls()
        for protocol in protocols:
            stats.tally(protocol).chargers += 1
        return stats

    def tally(self, protocol: str) -> Tally:
        return self.by_protocol.setdefault(protocol, Tally())

    def total(self, name: str) -> int:
        """A ``Tally`` field's sum over the versions."""
        return sum(getattr(t, name) for t in self.by_protocol.values())

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(detail)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def progress(self) -> str:
        elapsed = self.elapsed()
        sent = self.total("sent")
        return (
            f"{elapsed:6.1f}s  chargers {self.total('connected')}/{self.total('chargers')}  "
            f"sessions {self.total('sessions')}  msgs {sent}  "
            f"{sent / elapsed if elapsed else 0:.0f} msg/s  "
            f"errors {sum(self.errors.values())}  commands {sum(self.commands.values())}"
        )

    def summary(self) -> dict[str, Any]:
        elapsed = self.elapsed()
        sent = self.total("sent")
        lat = sorted(self.latencies_ms)
        return {
            "chargers": self.total("chargers"),
            "connected": self.total("reached"),
            "sessions_completed": self.total("sessions"),
            "remote_sessions": self.total("remote_sessions"),
            "messages_sent": sent,
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(self.errors),
            "error_samples": self.error_samples,
            "latency_ms": {
                "p50": percentile(lat, 50),
                "p90": percentile(lat, 90),
                "p99": percentile(lat, 99),
                "max": round(lat[-1], 3) if lat else None,
            },
            "msgs_per_s": round(sent / elapsed, 1) if elapsed else 0.0,
            "elapsed_s": round(elapsed, 3),
            "commands_answered": sum(self.commands.values()),
            "commands_by_action": dict(self.commands),
            "interrupted": self.interrupted,
            "by_protocol": {p: t.summary() for p, t in sorted(self.by_protocol.items())},
        }


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return round(ordered[rank - 1], 3)


def render(summary: dict[str, Any]) -> str:
    lat = summary["latency_ms"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    def each(text: str) -> str:
        """``text`` formatted for every OCPP version: ``  (ocpp1.6 .., ocpp2.0.1 ..)``."""
        parts = [f"{p} " + text.format(**t) for p, t in summary["by_protocol"].items()]
        return f"  ({', '.join(parts)})"

    lines = [
        f"chargers            {summary['connected']}/{summary['chargers']} connected"
        + each("{connected}/{chargers}"),
        f"sessions completed  {summary['sessions_completed']}"
        f" ({summary['remote_sessions']} remote-started)" + each("{sessions_completed}"),
        f"messages sent       {summary['messages_sent']}"
        f" in {summary['elapsed_s']:.2f}s ({summary['msgs_per_s']} msg/s)",
        f"latency ms          p50 {ms(lat['p50'])}  p90 {ms(lat['p90'])}"
        f"  p99 {ms(lat['p99'])}  max {ms(lat['max'])}",
        f"commands answered   {summary['commands_answered']}"
        + "".join(f"  {a}={n}" for a, n in sorted(summary["commands_by_action"].items())),
        f"errors              {summary['errors']}"
        + "".join(f"  {k}={n}" for k, n in sorted(summary["errors_by_kind"].items())),
    ]
    lines += [f"  {s}" for s in summary["error_samples"]]
    if summary["interrupted"]:
        lines.append("interrupted")
    return "\n".join(lines)
