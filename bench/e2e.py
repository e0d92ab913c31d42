"""End-to-end benchmark: the baseline (the user's Phase 1 BRPOP loop, ported)
against our adapter + processors, each on a fresh Redis, all real processes.

    .venv/bin/python -m bench.e2e            # 100k messages, 5 s latency run
    .venv/bin/python -m bench.e2e --quick    # 10k messages, 2 s latency run

For each configuration: a warm-up, then a throughput phase (N Heartbeat CALLs
over K chargers pushed as fast as the client can, timed from the first LPUSH
to the last reply popped, with the CPU each process spent), then a latency
phase (CALLs paced at an offered rate, each timed from its LPUSH to its
reply's receipt). Every message must get exactly one reply, or the run fails.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis

from adapters.devstack import RedisServer, Service, wait_for
from bench.procstat import Profiler, cpu_seconds, own_cpu_seconds, redis_cpu_seconds, top_frames
from bench.traffic import (
    BenchFailure,
    ReplyLists,
    Sender,
    Tracker,
    charge_point_ids,
    collect,
    heartbeats,
    stray_replies,
)
from processor import keys

REPO = Path(__file__).resolve().parent.parent
TARGET_THROUGHPUT = 20_000
TARGET_P99_MS = 10.0
TARGET_RATE = 2_000
STARTUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Setup:
    """One configuration: the baseline (``processors == 0``) or ours."""

    name: str
    processors: int

    @property
    def baseline(self) -> bool:
        return self.processors == 0


@dataclass
class Latency:
    offered_rate: float
    achieved_rate: float
    count: int
    p50: float
    p90: float
    p99: float
    max: float


@dataclass
class Result:
    setup: Setup
    messages: int = 0
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    latency: Latency | None = None
    profiles: dict[str, Path] = field(default_factory=dict)
    # Redis INFO commandstats over the throughput phase: name -> (calls, µs).
    commands: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def cpu_us(self, *roles: str) -> float:
        """µs of CPU per message spent by ``roles`` (prefixes) in the throughput phase."""
        spent = sum(v for k, v in self.cpu.items() if k.startswith(roles))
        return 1e6 * spent / self.messages if self.messages else 0.0


class System:
    """The processes of one configuration, on one Redis, and the client's
    connection to it; stopped and cleaned up on exit."""

    def __init__(self, setup: Setup, args: argparse.Namespace, stack: ExitStack) -> None:
        self.setup = setup
        self.args = args
        self.redis_pid: int | None = None
        external = os.environ.get("REDIS_URL")
        if external:
            self.url = external
        else:
            server = stack.enter_context(RedisServer())
            self.url = server.url
            assert server.process is not None
            self.redis_pid = server.process.pid
        self.client = redis.Redis.from_url(self.url)
        stack.callback(self.client.close)
        if external:
            self.client.flushdb()
        self.logdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ocpp-bench-")))
        self.services: dict[str, Service] = {}
        self._logs: list[IO[bytes]] = []
        stack.callback(self._stop_all)
        self.charge_points = charge_point_ids(args.charge_points)

    def start(self) -> None:
        """Start the services and wait until each is blocked waiting for work."""
        if self.setup.baseline:
            self._start("baseline", "bench.baseline_brpop")
            blocked = {"brpop": 1}
        else:
            self._start("adapter", "adapters")
            for n in range(1, self.setup.processors + 1):
                self._start(f"processor-{n}", "processor")
            blocked = {"blmove": 1, "xreadgroup": self.setup.processors}
        wait_for(
            lambda: self._blocked(blocked), STARTUP_TIMEOUT_S, f"services blocked in {blocked}"
        )

    def _start(self, role: str, module: str) -> None:
        log = open(self.logdir / f"{role}.log", "wb")  # noqa: SIM115 (closed in _stop_all)
        self._logs.append(log)
        env = {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        }
        self.services[role] = Service(module, self.url, env=env, log=log)

    def _blocked(self, expected: dict[str, int]) -> bool:
        """Whether at least ``expected[cmd]`` clients are blocked in each ``cmd``."""
        self.check()
        counts: dict[str, int] = {}
        for c in self.client.client_list():
            if "b" in c["flags"]:
                counts[c["cmd"]] = counts.get(c["cmd"], 0) + 1
        return all(counts.get(cmd, 0) >= n for cmd, n in expected.items())

    def check(self) -> None:
        """Raise if a service has died."""
        for role, service in self.services.items():
            if not service.alive():
                raise BenchFailure(f"{role} exited early:\n{self.log_tail(role)}")

    def log_tail(self, role: str, lines: int = 20) -> str:
        path = self.logdir / f"{role}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of Redis, each service and this client."""
        out = {"redis": redis_cpu_seconds(self.client, self.redis_pid)}
        for role, service in self.services.items():
            out[role] = cpu_seconds(service.pid)
        out["client"] = own_cpu_seconds()
        return out

    def stop(self) -> None:
        """SIGTERM every service and insist they exit cleanly with nothing
        left behind: no requests, no unacknowledged entries, no stray replies."""
        failures = []
        for role, service in self.services.items():
            code = service.terminate()
            if code != 0:
                failures.append(f"{role} exited with {code}:\n{self.log_tail(role)}")
        if failures:
            raise BenchFailure("\n".join(failures))
        left = self.client.llen(keys.REQUESTS)
        strays = stray_replies(self.client, self.charge_points)
        pending = 0
        if not self.setup.baseline:
            pending = int(self.client.xpending(keys.INBOUND, keys.GROUP)["pending"])
        if left or strays or pending:
            raise BenchFailure(
                f"after stopping: {left} requests left, {pending} entries pending, "
                f"{strays} replies nobody asked for"
            )

    def _stop_all(self) -> None:
        for service in self.services.values():
            if service.alive():
                try:
                    service.terminate(timeout=10)
                except Exception:
                    service.kill()
        for log in self._logs:
            log.close()

    def run_phase(self, phase: str, count: int, rate: float | None) -> Tracker:
        """Send ``count`` Heartbeats (paced at ``rate``/s, or flat out) and
        collect their replies; fails unless each got exactly one. Flat out,
        replies are swept every ``--poll-ms``; paced, each is timed as it lands."""
        envelopes = heartbeats(phase, count, self.charge_points)
        sender = Sender(self.url, envelopes, rate)
        tracker = Tracker(phase, count, self.charge_points)
        if rate is not None:
            tracker.sent_at = sender.sent_at
        budget = (count / rate if rate else count / 1000) + 60.0
        sender.start()

        def check() -> None:
            self.check()
            if sender.error is not None:
                raise BenchFailure(f"sender failed: {sender.error!r}")

        lists = ReplyLists(self.client, self.charge_points)
        poll_s = None if rate is not None else self.args.poll_ms / 1000
        try:
            collect(lists, tracker, time.perf_counter() + budget, check, poll_s)
        finally:
            sender.stop()
            sender.join(10)
            lists.close()
        strays = stray_replies(self.client, self.charge_points)
        if strays:
            raise BenchFailure(f"phase {phase!r}: {strays} replies beyond one per message")
        tracker.first_at = sender.started_at  # the clock starts at the first LPUSH
        if rate is not None:
            tracker.last_at = sender.finished_at
        return tracker


def run_setup(setup: Setup, args: argparse.Namespace) -> Result:
    result = Result(setup)
    with ExitStack() as stack:
        system = System(setup, args, stack)
        system.start()
        system.run_phase("w", args.warmup, None)

        profilers = _start_profilers(system, args.profile, stack)
        system.client.config_resetstat()
        before = system.cpu()
        tracker = system.run_phase("t", args.messages, None)
        after = system.cpu()
        result.commands = {
            name.removeprefix("cmdstat_"): (int(stat["calls"]), int(stat["usec"]))
            for name, stat in system.client.info("commandstats").items()
        }
        for role, profiler in profilers.items():
            profiler.finish()
            result.profiles[role] = profiler.output
        result.messages = args.messages
        result.seconds = tracker.last_at - tracker.first_at
        result.cpu = {k: after[k] - before[k] for k in before}

        count = max(1, round(args.rate * args.duration))
        tracker = system.run_phase("l", count, args.rate)
        result.latency = latency_of(tracker, args.rate)
        system.stop()
    return result


def _start_profilers(
    system: System, directory: Path | None, stack: ExitStack
) -> dict[str, Profiler]:
    if directory is None:
        return {}
    directory.mkdir(parents=True, exist_ok=True)
    profilers = {}
    for role, service in system.services.items():
        out = directory / f"{system.setup.name.replace(' ', '_')}-{role}.txt"
        profilers[role] = Profiler(service.pid, out)
        stack.callback(profilers[role].close)
    for profiler in profilers.values():
        profiler.wait_started()
    return profilers


def latency_of(tracker: Tracker, rate: float) -> Latency:
    ms = sorted(1000 * x for x in tracker.latencies)

    def pct(q: float) -> float:
        return ms[min(len(ms) - 1, max(0, math.ceil(q * len(ms)) - 1))]

    span = tracker.last_at - tracker.first_at
    achieved = len(ms) / span if span > 0 else 0.0
    return Latency(rate, achieved, len(ms), pct(0.50), pct(0.90), pct(0.99), ms[-1])


def _ratio(ours: float, base: float) -> str:
    return f"{ours / base:.2f}x" if base else "-"


def render(results: Sequence[Result], args: argparse.Namespace) -> str:
    """The table: one column per configuration, one row per figure."""
    base = next((r for r in results if r.setup.baseline), None)
    rows: list[tuple[str, Callable[[Result], str]]] = [
        ("throughput (msgs/s)", lambda r: f"{r.throughput:,.0f}"),
        ("  messages / seconds", lambda r: f"{r.messages:,} / {r.seconds:.2f}"),
        (
            f"latency @ {args.rate:,.0f}/s offered (achieved)",
            lambda r: f"{r.latency.achieved_rate:,.0f}/s" if r.latency else "-",
        ),
        ("  p50 (ms)", lambda r: f"{r.latency.p50:.2f}" if r.latency else "-"),
        ("  p90 (ms)", lambda r: f"{r.latency.p90:.2f}" if r.latency else "-"),
        ("  p99 (ms)", lambda r: f"{r.latency.p99:.2f}" if r.latency else "-"),
        ("  max (ms)", lambda r: f"{r.latency.max:.2f}" if r.latency else "-"),
        ("CPU µs/msg (throughput phase)", lambda r: ""),
        ("  redis-server", lambda r: f"{r.cpu_us('redis'):.1f}"),
        ("  our processes (all)", lambda r: f"{r.cpu_us('adapter', 'processor', 'baseline'):.1f}"),
        ("    adapter", lambda r: f"{r.cpu_us('adapter'):.1f}" if not r.setup.baseline else "-"),
        (
            "    processor(s)",
            lambda r: f"{r.cpu_us('processor', 'baseline'):.1f}",
        ),
        ("  bench client", lambda r: f"{r.cpu_us('client'):.1f}"),
        (
            "  cores busy (all CPU / wall)",
            lambda r: f"{sum(r.cpu.values()) / r.seconds:.2f}" if r.seconds else "-",
        ),
    ]
    if base is not None:
        rows += [
            ("vs baseline: throughput", lambda r: _ratio(r.throughput, base.throughput)),
            (
                "vs baseline: p99 latency",
                lambda r: (
                    _ratio(r.latency.p99, base.latency.p99) if r.latency and base.latency else "-"
                ),
            ),
        ]
    header = ["", *(r.setup.name for r in results)]
    table = [header] + [[label, *(fmt(r) for r in results)] for label, fmt in rows]
    widths = [max(len(row[c]) for row in table) for c in range(len(header))]
    lines = []
    for n, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [
            v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def targets(results: Sequence[Result], args: argparse.Namespace) -> str:
    ours = next((r for r in results if r.setup.processors == 1), None)
    lines = [
        f"targets (ours, 1 adapter + 1 processor): >= {TARGET_THROUGHPUT:,} msgs/s end to end; "
        f"p99 < {TARGET_P99_MS:g} ms at {TARGET_RATE:,} msgs/s"
    ]
    if ours is not None and ours.latency is not None:
        met = "met" if ours.throughput >= TARGET_THROUGHPUT else "MISSED"
        lines.append(f"  throughput: {ours.throughput:,.0f} msgs/s -> {met}")
        if args.rate == TARGET_RATE:
            met = "met" if ours.latency.p99 < TARGET_P99_MS else "MISSED"
            lines.append(f"  p99: {ours.latency.p99:.2f} ms -> {met}")
        else:
            lines.append(f"  p99: measured at {args.rate:,.0f}/s, not the target's rate")
    return "\n".join(lines)


def commandstats(results: Sequence[Result], limit: int = 8) -> str:
    """Where Redis spent its command time in the throughput phase. Commands a
    script runs are counted both on their own and within EVALSHA; the rest
    of Redis's CPU goes to I/O, the event loop and the AOF."""
    out = ["redis-server command time, throughput phase (INFO commandstats):"]
    for r in results:
        ranked = sorted(r.commands.items(), key=lambda kv: -kv[1][1])[:limit]
        cells = [
            f"{name} {usec / r.messages:.1f}µs ({calls / r.messages:.3g}/msg)"
            for name, (calls, usec) in ranked
        ]
        out.append(f"  {r.setup.name}: " + ", ".join(cells))
    return "\n".join(out)


def profiles(results: Sequence[Result]) -> str:
    out = []
    for r in results:
        for role, path in r.profiles.items():
            frames = top_frames(path) if path.exists() else []
            out.append(f"\npy-spy, {r.setup.name}, {role} ({path}): self% incl% function")
            out += [f"  {own:5.1f} {incl:5.1f}  {name}" for own, incl, name in frames]
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=100_000, help="throughput-phase messages")
    p.add_argument(
        "--charge-points", type=int, default=100, help="chargers the load is spread over"
    )
    p.add_argument("--rate", type=float, default=float(TARGET_RATE), help="latency-phase msgs/s")
    p.add_argument("--duration", type=float, default=5.0, help="latency-phase seconds")
    p.add_argument("--warmup", type=int, default=2_000, help="messages before measuring")
    p.add_argument(
        "--processors",
        default="1,2",
        help="comma-separated processor counts to run ours with (one adapter each)",
    )
    p.add_argument(
        "--poll-ms",
        type=float,
        default=5.0,
        help="throughput phase: sweep the reply lists this often (the end time's resolution)",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the baseline")
    p.add_argument("--quick", action="store_true", help="10k messages, 2 s latency phase")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy our services during the throughput phase (perturbs the figures)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.duration, args.warmup = 10_000, 2.0, 1_000
    if args.messages < 1 or args.charge_points < 1 or args.rate <= 0 or args.duration <= 0:
        p.error("--messages, --charge-points, --rate and --duration must be positive")
    return args


def setups(args: argparse.Namespace) -> list[Setup]:
    out = [] if args.no_baseline else [Setup("baseline", 0)]
    for n in (int(x) for x in args.processors.split(",") if x.strip()):
        out.append(Setup(f"ours 1A+{n}P", n))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every subprocess and Redis is cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    redis_where = os.environ.get("REDIS_URL") or "a private redis-server per configuration"
    print(
        f"{args.messages:,} Heartbeats over {args.charge_points} chargers; latency at "
        f"{args.rate:,.0f}/s for {args.duration:g} s; Redis: {redis_where}; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    results = []
    for setup in setups(args):
        started = time.perf_counter()
        try:
            results.append(run_setup(setup, args))
        except BenchFailure as exc:
            print(f"FAILED: {setup.name}: {exc}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print(f"interrupted during {setup.name}; cleaned up", file=sys.stderr)
            sys.exit(130)
        print(f"  {setup.name}: done in {time.perf_counter() - started:.1f} s", flush=True)
    print()
    print(render(results, args))
    print()
    print(targets(results, args))
    print()
    print(commandstats(results))
    if args.profile is not None:
        print(profiles(results))


if __name__ == "__main__":
    main()
