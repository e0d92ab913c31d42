"""What telemetry costs end to end: ours (1 adapter + 1 processor) with
telemetry off, and on as production would run it (traces sampled at 10% by
``parentbased_traceidratio``, and metrics, exported over OTLP/HTTP to a local
sink that accepts and discards), in alternating runs on a fresh Redis each,
with bench.e2e's machinery. Prints every run and the ratio of the medians.

    .venv/bin/python -m bench.telemetry            # 3 runs each way, 100k messages
    .venv/bin/python -m bench.telemetry --quick    # 3 runs each way, 30k messages

The sink runs in a process of its own, as a collector would; it keeps the
requests' sizes and decodes the trace requests only after the runs, to count
spans without spending CPU during them.
"""

from __future__ import annotations

import argparse
import json
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

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    conn.send(server.server_address[1])
    server.serve_forever()


@contextmanager
def sink() -> Iterator[str]:
    """The sink's URL while it runs."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_serve_sink, args=(child,), daemon=True)
    process.start()
    try:
        if not parent.poll(30):
            raise BenchFailure("the OTLP sink did not start")
        yield f"http://127.0.0.1:{parent.recv()}"
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


def run_once(args: argparse.Namespace, env: dict[str, str]) -> Run:
    """One throughput phase on a fresh Redis, the services started with ``env``."""
    with environment(env), ExitStack() as stack:
        system = System(Setup("ours 1A+1P", 1), args, stack)
        system.start()
        system.run_phase("w", args.warmup, None)
        exporters = {f"{role} exporter": pid for role, service in system.services.items()
                     for pid in children(service.pid)}  # fmt: skip
        settle(list(exporters.values()))
        before = {**system.cpu(), **{k: cpu_seconds(pid) for k, pid in exporters.items()}}
        tracker = system.run_phase("t", args.messages, None)
        after = {**system.cpu(), **{k: cpu_seconds(pid) for k, pid in exporters.items()}}
        system.stop()  # SIGTERM: the services flush their telemetry
    seconds = tracker.last_at - tracker.first_at
    cpu = {k: 1e6 * (after[k] - before[k]) / args.messages for k in before}
    return Run(bool(env), args.messages, seconds, cpu)


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
        "run  telemetry                msgs/s   CPU µs/msg: redis adapter processor"
        "  exporters  client"
    ]
    for n, r in enumerate(runs, 1):
        label = f"on ({ratio:.0%} sampled)" if r.telemetry else "off"
        exporters = sum(v for k, v in r.cpu_us.items() if k.endswith("exporter"))
        lines.append(
            f"{n:>3}  {label:<19} {r.throughput:>11,.0f}   {r.cpu_us.get('redis', 0):>17.1f}"
            f" {r.cpu_us.get('adapter', 0):>7.1f} {r.cpu_us.get('processor-1', 0):>9.1f}"
            f" {exporters:>10.1f} {r.cpu_us.get('client', 0):>7.1f}"
        )
    return "\n".join(lines)


def summary(runs: Sequence[Run]) -> tuple[str, bool]:
    """The verdict, on the median of the paired ratios: runs go in pairs
    (off, on or on, off), one after the other, so each ratio compares runs
    made under the same conditions; the machine's drift cancels out."""
    off = statistics.median(r.throughput for r in runs if not r.telemetry)
    on = statistics.median(r.throughput for r in runs if r.telemetry)
    pairs = [
        next(r for r in pair if r.telemetry).throughput
        / next(r for r in pair if not r.telemetry).throughput
        for pair in zip(runs[::2], runs[1::2], strict=True)
    ]
    paired = statistics.median(pairs)
    drop = 1 - paired
    ok = drop <= MAX_DROP
    text = (
        f"median throughput: off {off:,.0f} msgs/s, on {on:,.0f} msgs/s (on/off {on / off:.3f})\n"
        f"paired on/off ratios: {', '.join(f'{x:.3f}' for x in pairs)}; median {paired:.3f}, "
        f"a drop of {drop:.1%} (target: at most {MAX_DROP:.0%}) -> " + ("met" if ok else "MISSED")
    )
    return text, ok


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    doc = (__doc__ or "").split("\n")[0]
    p = argparse.ArgumentParser(prog="python -m bench.telemetry", description=doc)
    p.add_argument("--messages", type=int, default=100_000, help="messages per throughput run")
    p.add_argument("--runs", type=int, default=3, help="runs each way, alternating")
    p.add_argument("--ratio", type=float, default=0.1, help="trace sampling ratio when on")
    p.add_argument("--charge-points", type=int, default=100)
    p.add_argument("--warmup", type=int, default=2_000)
    p.add_argument("--poll-ms", type=float, default=5.0)
    p.add_argument("--quick", action="store_true", help="30k messages per run")
    args = p.parse_args(argv)
    if args.quick:
        args.messages = 30_000
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(
        f"{args.messages:,} Heartbeats per run over {args.charge_points} chargers, "
        f"{args.runs} runs each way; telemetry on = traces at {args.ratio:.0%} "
        f"(parentbased_traceidratio) + metrics, OTLP/HTTP to a local sink; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    runs: list[Run] = []
    exported: list[dict[str, Any]] = []
    try:
        with sink() as url:
            sink_stats(url)
            # off, on, on, off, off, on, ...: drift hits both sides alike.
            for n in range(2 * args.runs):
                on = (n % 4) in (1, 2)
                started = time.perf_counter()
                runs.append(run_once(args, telemetry_env(url, args.ratio) if on else {}))
                if on:
                    exported.append(sink_stats(url))
                label = "on " if on else "off"
                print(f"  run {n + 1} ({label}): {runs[-1].throughput:,.0f} msgs/s "
                      f"({time.perf_counter() - started:.1f} s)", flush=True)  # fmt: skip
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
    print()
    print(render(runs, args.ratio))
    print()
    for n, stats in enumerate(exported, 1):
        per_message = 2 * (args.warmup + args.messages)  # an adapter and a processor span each
        spans = sum(stats["spans"].values())
        print(
            f"exported, on-run {n}: spans {stats['spans']} ({spans / per_message:.1%} of "
            f"{per_message:,} possible); requests {stats['requests']}; bytes {stats['bytes']}"
        )
    text, ok = summary(runs)
    print()
    print(text)
    if not all(sum(s["spans"].values()) for s in exported):
        print("FAILED: a run with telemetry on exported no spans", file=sys.stderr)
        sys.exit(1)
    # Each sampled message has an adapter span and a processor span: the
    # processor follows the adapter's decision, and neither may drop any.
    if any(len(set(s["spans"].values())) != 1 or len(s["spans"]) != 2 for s in exported):
        print("FAILED: adapter and processor exported different numbers of spans",
              file=sys.stderr)  # fmt: skip
        sys.exit(1)


if __name__ == "__main__":
    main()
