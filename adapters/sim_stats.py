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
class Stats:
    chargers: int = 0
    connected: int = 0
    sessions: int = 0
    remote_sessions: int = 0
    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    commands: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    interrupted: bool = False

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(detail)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def progress(self) -> str:
        elapsed = self.elapsed()
        return (
            f"{elapsed:6.1f}s  chargers {self.connected}/{self.chargers}  "
            f"sessions {self.sessions}  msgs {self.sent}  "
            f"{self.sent / elapsed if elapsed else 0:.0f} msg/s  "
            f"errors {sum(self.errors.values())}  commands {sum(self.commands.values())}"
        )

    def summary(self) -> dict[str, Any]:
        elapsed = self.elapsed()
        lat = sorted(self.latencies_ms)
        return {
            "chargers": self.chargers,
            "connected": self.connected,
            "sessions_completed": self.sessions,
            "remote_sessions": self.remote_sessions,
            "messages_sent": self.sent,
            "errors": sum(self.errors.values()),
            "errors_by_kind": dict(self.errors),
            "error_samples": self.error_samples,
            "latency_ms": {
                "p50": percentile(lat, 50),
                "p90": percentile(lat, 90),
                "p99": percentile(lat, 99),
                "max": round(lat[-1], 3) if lat else None,
            },
            "msgs_per_s": round(self.sent / elapsed, 1) if elapsed else 0.0,
            "elapsed_s": round(elapsed, 3),
            "commands_answered": sum(self.commands.values()),
            "commands_by_action": dict(self.commands),
            "interrupted": self.interrupted,
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

    lines = [
        f"chargers            {summary['connected']}/{summary['chargers']} connected",
        f"sessions completed  {summary['sessions_completed']}"
        f" ({summary['remote_sessions']} remote-started)",
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
