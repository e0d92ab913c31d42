"""What telemetry costs end to end: ours (1 adapter + 1 processor) with
telemetry off, and on as production would run it (traces sampled at 10% by
``parentbased_traceidratio``, and metrics, exported over OTLP/HTTP to a local
sink that accepts and discards), with bench.e2e's machinery. Prints every
burst, the median of the paired on/off ratios and an interval for it.

    .venv/bin/python -m bench.telemetry            # 80 pairs of 20k-message bursts (~9 min)
    .venv/bin/python -m bench.telemetry --quick    # 2 pairs of 20k

Both stacks run side by side, each on a Redis of its own, and are driven in
turns, one burst at a time (each after a short untimed one, to warm it), the
other idle (blocked in Redis): the two bursts of a pair are a second or two
apart. This machine's speed drifts by a fifth within a minute, so runs on
fresh stacks, ten seconds apart, could not tell a few percent from the
drift. Even paired, one ratio is noisy: run with telemetry off on both
stacks, ratios spread with a standard deviation of 0.11-0.16 whatever the
burst's length (5k to 40k messages), so the median of 10 pairs wandered by
±4% from run to run, and 40 pairs' 95% interval spanned ±6%: hence 80
pairs (±3%), and the interval printed with the median.

The sink runs in a process of its own, as a collector would; it keeps the
requests' sizes and decodes the trace requests only after the runs, to count
spans without spending CPU during them. It runs at the lowest priority
(SCHED_IDLE), as the services' exporter processes do: it stands in for a
collector, which has CPU of its own, and at normal priority its Python HTTP
server took the pipeline's (6% of a processor-only drain); its CPU is
printed apart, over the whole run. (Work the on stack leaves for later, a
batch's telemetry up to a second, spans until 512 gather or 5 s pass, may
fall in the off stack's next burst; at the lowest priority or a few
milliseconds a burst, it is within the noise.)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import signal
import statistics
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.e2e import Setup, System
from bench.procstat import cpu_seconds
from bench.traffic import BenchFailure

MAX_DROP = 0.10
MIN_PAIRS = 6  # fewer, and even their whole range covers the median less than 95% of the time
OTEL_VARIABLES = ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER")


@dataclass
class Run:
    telemetry: bool
    messages: int
    seconds: float
    cpu_us: dict[str, float] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.messages / self.seconds


# -- the sink ----------------------------------------------------------------


def _serve_sink(conn: Connection) -> None:
    """A process that accepts OTLP/HTTP requests, answers 200 and keeps
    the bodies of trace requests; ``GET /stats`` reports."""
    received: dict[str, list[int]] = {}
    traces: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # connections kept alive, as a collector's are

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.setdefault(self.path, []).append(len(body))
            if self.path == "/v1/traces":
                traces.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                ExportTraceServiceRequest,
            )

            spans: dict[str, int] = {}
            for body in traces:
                for rs in ExportTraceServiceRequest.FromString(body).resource_spans:
                    name = next(
                        (a.value.string_value for a in rs.resource.attributes
                         if a.key == "service.name"), "?",
                    )  # fmt: skip
                    spans[name] = spans.get(name, 0) + sum(len(ss.spans) for ss in rs.scope_spans)
            stats = {
                "requests": {p: len(v) for p, v in received.items()},
                "bytes": {p: sum(v) for p, v in received.items()},
                "spans": spans,
            }
            data = json.dumps(stats).encode()
            traces.clear()
            received.clear()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    # A collector's stand-in: one runs on a host of its own, or beside the
    # services with CPU set aside for it. Python's HTTP server at normal
    # priority took CPU the pipeline needed on this 2-CPU machine (the
    # processor-only drain lost 6% to it); at the lowest, it takes what is
    # left, and its CPU is reported apart.
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    conn.send(server.server_address[1])
    server.serve_forever()


@dataclass(frozen=True)
class Sink:
    url: str
    pid: int


@contextmanager
def sink() -> Iterator[Sink]:
    """The sink while it runs."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_serve_sink, args=(child,), daemon=True)
    process.start()
    try:
        if not parent.poll(30):
            raise BenchFailure("the OTLP sink did not start")
        assert process.pid is not None
        yield Sink(f"http://127.0.0.1:{parent.recv()}", process.pid)
    finally:
        process.terminate()
        process.join(10)


def sink_stats(url: str) -> dict[str, Any]:
    """What the sink received since the last call (and forget it)."""
    with urllib.request.urlopen(f"{url}/stats", timeout=60) as response:
        stats: dict[str, Any] = json.loads(response.read())
        return stats


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set and every other OTEL_* removed;
    the services inherit it."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("OTEL_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(values)
    try:
        yield
    finally:
        for k in [k for k in os.environ if k.startswith("OTEL_")]:
            del os.environ[k]
        os.environ.update(saved)


def telemetry_env(url: str, ratio: float) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": url,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": str(ratio),
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
    }


# -- runs ----------------------------------------------------------------------


def start_systems(
    args: argparse.Namespace, url: str, stack: ExitStack
) -> tuple[dict[bool, System], dict[str, int]]:
    """Both stacks, started, warmed up and idle (telemetry off, on), and
    the pids of the one with telemetry's exporter processes."""
    systems = {}
    for on in (False, True):
        with environment(telemetry_env(url, args.ratio) if on else {}):
            system = System(Setup(f"telemetry {'on' if on else 'off'}", 1), args, stack)
            system.start()  # the services inherit the environment as it is now
        systems[on] = system
    for system in systems.values():
        system.run_phase("w", args.warmup, None)
    exporters = {f"{role} exporter": pid for role, service in systems[True].services.items()
                 for pid in children(service.pid)}  # fmt: skip
    settle(list(exporters.values()))
    return systems, exporters


def burst(system: System, exporters: dict[str, int], phase: str, args: argparse.Namespace) -> Run:
    """One throughput burst on ``system``, after an untimed one of
    ``--warmup`` messages: while the other stack ran, this one's caches went
    cold, which costs its first milliseconds. (Without it, the burst after
    one of the same stack ran warm, the other cold, and pairs split in two.)"""
    on = bool(exporters)
    system.run_phase(f"{phase}w", args.warmup, None)

    def cpu() -> dict[str, float]:
        return {**system.cpu(), **{k: cpu_seconds(pid) for k, pid in exporters.items()}}

    before = cpu()
    tracker = system.run_phase(phase, args.messages, None)
    after = cpu()
    per_message = {k: 1e6 * (after[k] - before[k]) / args.messages for k in before}
    return Run(on, args.messages, tracker.last_at - tracker.first_at, per_message)


def settle(pids: Sequence[int], quiet_s: float = 0.3, deadline_s: float = 20.0) -> None:
    """Wait until the exporter processes have used no CPU for ``quiet_s``:
    past their start-up (imports, at the lowest priority, may outlast the
    warm-up), which a service pays once, not per message."""
    started = time.monotonic()
    last = [cpu_seconds(pid) for pid in pids]
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < quiet_s:
        if time.monotonic() - started > deadline_s:
            raise BenchFailure(f"the span exporters kept busy for {deadline_s:.0f} s")
        time.sleep(0.05)  # polling /proc: there is nothing to wait on
        now = [cpu_seconds(pid) for pid in pids]
        if now != last:
            last, quiet_since = now, time.monotonic()


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (a service's span exporter)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def render(runs: Sequence[Run], ratio: float) -> str:
    lines = [
        "pair telemetry                msgs/s   CPU µs/msg: redis adapter processor"
        "  exporters  client"
    ]
    for n, r in enumerate(runs):
        label = f"on ({ratio:.0%} sampled)" if r.telemetry else "off"
        exporters = sum(v for k, v in r.cpu_us.items() if k.endswith("exporter"))
        cpu = r.cpu_us.get
        lines.append(
            f"{n // 2 + 1:>4}  {label:<19} {r.throughput:>11,.0f}   {cpu('redis', 0):>17.1f}"
            f" {cpu('adapter', 0):>7.1f} {cpu('processor-1', 0):>9.1f}"
            f" {exporters:>10.1f} {cpu('client', 0):>7.1f}"
        )
    return "\n".join(lines)


def summary(runs: Sequence[Run]) -> tuple[str, bool]:
    """The verdict, on the median of the paired ratios: each ratio compares
    two bursts made one after the other, so the machine's drift cancels."""
    off = statistics.median(r.throughput for r in runs if not r.telemetry)
    on = statistics.median(r.throughput for r in runs if r.telemetry)
    pairs = sorted(
        next(r for r in pair if r.telemetry).throughput
        / next(r for r in pair if not r.telemetry).throughput
        for pair in zip(runs[::2], runs[1::2], strict=True)
    )
    paired = statistics.median(pairs)
    low, high = median_interval(pairs)
    drop = 1 - paired
    ok = drop <= MAX_DROP
    # Whether the whole interval is on the verdict's side of the target.
    clear = 1 - low <= MAX_DROP if ok else 1 - high > MAX_DROP
    cpu = []
    for role in ("redis", "adapter", "processor-1", "client"):
        costs = [statistics.median(r.cpu_us.get(role, 0) for r in runs if r.telemetry == t)
                 for t in (False, True)]  # fmt: skip
        cpu.append(f"{role.removesuffix('-1')} {costs[1] - costs[0]:+.1f}")
    exporters = statistics.median(
        sum(v for k, v in r.cpu_us.items() if k.endswith("exporter")) for r in runs if r.telemetry
    )
    cpu.append(f"exporters {exporters:+.1f}")
    text = (
        f"median throughput: off {off:,.0f} msgs/s, on {on:,.0f} msgs/s (on/off {on / off:.3f})\n"
        f"median CPU µs/msg, on minus off: {', '.join(cpu)}\n"
        f"paired on/off ratios, sorted: {', '.join(f'{x:.3f}' for x in pairs)}\n"
        f"median {paired:.3f}, a drop of {drop:.1%} (95% interval of the median: "
        f"{1 - high:.1%} to {1 - low:.1%}; target: at most {MAX_DROP:.0%}) -> "
        + ("met" if ok else "MISSED")
        + (
            ", too few pairs to tell it from the noise"
            if len(pairs) < MIN_PAIRS
            else ", clear of the noise"
            if clear
            else ", within the noise"
        )
    )
    return text, ok


def median_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """A distribution-free interval for the median of ``values``: the order
    statistics the binomial law (normal approximation) puts around it,
    widened by one each side so that it covers at least 95% (96.7% for 80
    values). On a dozen values or fewer, their whole range, which covers
    less than 95% below 6."""
    ordered = sorted(values)
    n = len(ordered)
    k = max(0, math.floor((n - z * math.sqrt(n)) / 2) - 1)
    return ordered[k], ordered[n - 1 - k]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    doc = (__doc__ or "").split("\n")[0]
    p = argparse.ArgumentParser(prog="python -m bench.telemetry", description=doc)
    p.add_argument("--messages", type=int, default=20_000, help="messages per burst")
    p.add_argument("--pairs", type=int, default=80, help="pairs of bursts (off, on), alternating")
    p.add_argument("--ratio", type=float, default=0.1, help="trace sampling ratio when on")
    p.add_argument("--charge-points", type=int, default=100)
    p.add_argument("--warmup", type=int, default=2_000)
    p.add_argument("--poll-ms", type=float, default=5.0)
    p.add_argument("--quick", action="store_true", help="2 pairs of 20k-message bursts")
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.pairs = 20_000, 2
    if args.messages < 1 or args.pairs < 1:
        p.error("--messages and --pairs must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(
        f"{args.pairs} pairs of {args.messages:,}-Heartbeat bursts over {args.charge_points} "
        f"chargers; telemetry on = traces at {args.ratio:.0%} (parentbased_traceidratio) + "
        f"metrics, OTLP/HTTP to a local sink; {os.cpu_count()} CPUs",
        flush=True,
    )
    runs: list[Run] = []
    try:
        with sink() as the_sink, ExitStack() as stack:
            url = the_sink.url
            systems, exporters = start_systems(args, url, stack)
            sink_started = cpu_seconds(the_sink.pid)
            for n in range(args.pairs):
                # off, on, then on, off: drift within a pair hits both sides alike.
                for on in (False, True) if n % 2 == 0 else (True, False):
                    started = time.perf_counter()
                    runs.append(burst(systems[on], exporters if on else {}, f"p{n}-", args))
                    print(f"  pair {n + 1} ({'on ' if on else 'off'}): "
                          f"{runs[-1].throughput:,.0f} msgs/s "
                          f"({time.perf_counter() - started:.1f} s)", flush=True)  # fmt: skip
            for system in systems.values():
                system.stop()  # SIGTERM: the services flush their telemetry
            sink_s = cpu_seconds(the_sink.pid) - sink_started  # (before it decodes, below)
            exported = sink_stats(url)
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
    print()
    print(render(runs, args.ratio))
    print()
    messages = args.warmup + args.pairs * (args.warmup + args.messages)  # the on stack's
    spans = exported["spans"]
    print(f"exported: spans {spans} of {messages:,} messages each; "
          f"requests {exported['requests']}; bytes {exported['bytes']}; the sink's CPU "
          f"{1e6 * sink_s / messages:.1f} µs a message over the whole run")  # fmt: skip
    text, ok = summary(runs)
    print()
    print(text)
    # Each sampled message has an adapter span and a processor span: the
    # processor follows the adapter's decision, and neither may drop any.
    if len(spans) != 2 or len(set(spans.values())) != 1:
        print("FAILED: adapter and processor exported different numbers of spans",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)
    # As many as the ratio says, within 5 standard deviations.
    expected, sigma = messages * args.ratio, (messages * args.ratio * (1 - args.ratio)) ** 0.5
    if abs(next(iter(spans.values())) - expected) > 5 * sigma:
        print(f"FAILED: {spans} spans exported, {expected:,.0f} expected", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
