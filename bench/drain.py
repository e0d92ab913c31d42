"""What telemetry costs the processor alone: a stream filled while the
processor is stopped (SIGSTOP), then drained, timed from SIGCONT until the
group has nothing undelivered or pending; one stack with telemetry off, one
with it on as bench.telemetry runs it, in turns, paired.

    .venv/bin/python -m bench.drain              # 12 pairs of 40k entries
    .venv/bin/python -m bench.drain --pairs 4    # quicker, noisier

No adapter and no client run during a drain, so it is usually less noisy
than the end-to-end bench (paired ratios with a standard deviation of 0.03
to 0.12 in runs so far, against 0.11 to 0.16): it is where to see what a
processor-side change does. Entries are written as the adapter writes them: a trace context
(``tp``) on the sampled ones only, sampled at ``--ratio``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import redis

from adapters.devstack import RedisServer, Service, wait_for
from bench.e2e import REPO
from bench.procstat import cpu_seconds, redis_cpu_seconds
from bench.telemetry import environment, median_interval, sink, telemetry_env
from bench.traffic import BenchFailure, charge_point_ids, heartbeats
from processor import keys
from processor.trace_context import TRACE_FIELD


@dataclass
class Stack:
    server: RedisServer
    processor: Service
    client: redis.Redis

    def drained(self) -> bool:
        self.check()
        for group in self.client.xinfo_groups(keys.INBOUND):
            if group["name"] in (keys.GROUP, keys.GROUP.encode()):
                return bool(group["pending"] == 0 and group["lag"] == 0)
        return False

    def check(self) -> None:
        if not self.processor.alive():
            raise BenchFailure("the processor exited early")


@dataclass
class Drain:
    telemetry: bool
    throughput: float
    processor_us: float  # CPU a message
    redis_us: float


def start(on: bool, url: str, ratio: float, stack: ExitStack, logdir: Path) -> Stack:
    server = stack.enter_context(RedisServer())
    with environment(telemetry_env(url, ratio) if on else {}):
        log = stack.enter_context(open(logdir / f"processor-{on}.log", "wb"))  # noqa: SIM115
        processor = Service("processor", server.url, env={"PYTHONPATH": str(REPO)}, log=log)
    stack.callback(processor.terminate)
    client = redis.Redis.from_url(server.url)
    stack.callback(client.close)
    wait_for(lambda: any("b" in c["flags"] for c in client.client_list()), 30, "a blocked read")
    return Stack(server, processor, client)


def drain(s: Stack, phase: str, count: int, traced: bool, ratio: float) -> Drain:
    """Fill the stream with ``count`` Heartbeats while the processor is
    stopped, then time it draining them."""
    assert s.server.process is not None
    charge_points = charge_point_ids(100)
    os.kill(s.processor.pid, signal.SIGSTOP)
    try:
        pipe = s.client.pipeline(transaction=False)
        for envelope in heartbeats(phase, count, charge_points):
            fields: dict[str, bytes | str] = {keys.ENVELOPE_FIELD: envelope}
            if traced and random.random() < ratio:
                fields[TRACE_FIELD] = f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"
            pipe.xadd(keys.INBOUND, fields)  # type: ignore[arg-type]
        pipe.execute()
        cpu = cpu_seconds(s.processor.pid), redis_cpu_seconds(s.client, s.server.process.pid)
        started = time.perf_counter()
    finally:
        os.kill(s.processor.pid, signal.SIGCONT)
    wait_for(s.drained, 120, "the stream drained")
    seconds = time.perf_counter() - started
    processor_s = cpu_seconds(s.processor.pid) - cpu[0]
    redis_s = redis_cpu_seconds(s.client, s.server.process.pid) - cpu[1]
    s.client.delete(*[keys.responses(cp) for cp in charge_points])
    s.client.xtrim(keys.INBOUND, maxlen=0)
    return Drain(traced, count / seconds, 1e6 * processor_s / count, 1e6 * redis_s / count)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=40_000, help="entries a drain")
    p.add_argument("--pairs", type=int, default=12)
    p.add_argument("--ratio", type=float, default=0.1, help="trace sampling ratio when on")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    runs: list[Drain] = []
    try:
        with sink() as the_sink, ExitStack() as stack:
            logdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ocpp-drain-")))
            url = the_sink.url
            stacks = {on: start(on, url, args.ratio, stack, logdir) for on in (False, True)}
            for n in range(args.pairs):
                for on in (False, True) if n % 2 == 0 else (True, False):
                    drain(stacks[on], f"p{n}w", 2_000, on, args.ratio)  # warm it up
                    runs.append(drain(stacks[on], f"p{n}-", args.messages, on, args.ratio))
                    print(f"  pair {n + 1} ({'on ' if on else 'off'}): "
                          f"{runs[-1].throughput:,.0f} msgs/s", flush=True)  # fmt: skip
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
    off = [r for r in runs if not r.telemetry]
    on = [r for r in runs if r.telemetry]
    ratios = [b.throughput / a.throughput for a, b in zip(off, on, strict=True)]
    low, high = median_interval(ratios)
    print(f"\nprocessor CPU µs/msg: off {statistics.median(r.processor_us for r in off):.1f}, "
          f"on {statistics.median(r.processor_us for r in on):.1f}; redis-server: off "
          f"{statistics.median(r.redis_us for r in off):.1f}, "
          f"on {statistics.median(r.redis_us for r in on):.1f}")  # fmt: skip
    print(f"paired on/off ratios, sorted: {', '.join(f'{x:.3f}' for x in sorted(ratios))}")
    print(
        f"median {statistics.median(ratios):.3f} (95% interval {low:.3f} to {high:.3f}), "
        f"standard deviation {statistics.stdev(ratios) if len(ratios) > 1 else 0:.3f}"
    )


if __name__ == "__main__":
    main()
