"""Redis memory under a fleet's traffic: does it level off or keep growing?

    .venv/bin/python -m bench.memory            # 1,000 chargers, 1,000,000 messages
    .venv/bin/python -m bench.memory --quick    # 100,000 messages

The whole system (adapter, one processor, the archiver and a PostgreSQL of
its own, as ``bench/e2e.py`` runs ours) takes the field mix
(``bench/fieldmix.py``) from ``--chargers`` chargers, sent flat out in
phases of ``--chunk`` messages, each with its opening. Redis's
``used_memory`` is read twice, after the first 10% of the messages and at
the end, each time once history is committed (the archivers' backlog is 0)
and the adapter and archiver have trimmed their streams; the target is at
most 1.5 times the first.

What grows with time rather than with the fleet: closed transactions and
StartTransaction idempotency keys, which expire after
``OCPP_CLOSED_TRANSACTION_TTL_S`` and ``OCPP_IDEMPOTENCY_TTL_S`` (7 days in
production). The run sets both to ``--ttl`` seconds (10 by default, less
than the first reading takes to come), so that the first reading already
holds a full TTL of sessions, as any reading a week into production would;
with a TTL longer than that, the two readings compare a part of a TTL's
sessions with a whole one, and the ratio says how far into the TTL each
was, not whether memory levels off. Both readings list the keys by type and family (``ocpp:cp:{cp}``
and the like) with their estimated memory, so a reader sees what holds it.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import redis

from adapters.devstack import wait_for
from bench.e2e import Setup, System
from bench.traffic import BenchFailure
from processor import keys

TARGET_RATIO = 1.5
FIRST_SHARE = 0.10
# Keys whose memory is measured per family (MEMORY USAGE), to estimate its total.
SAMPLED_PER_FAMILY = 20
# The adapter and the archiver trim with MINID ~, which keeps a partial node.
TRIMMED_ENTRIES = 100
SETTLE_TIMEOUT_S = 60.0

_CHARGER = re.compile(r"BENCH-CP-\d+")
_IDEMPOTENCY = re.compile(re.escape(keys.TXN_IDEMPOTENCY_PREFIX) + r".*")
_NUMBER = re.compile(r"\d+")


def family(key: str) -> str:
    """The key with its charger, idempotency content and numbers as
    placeholders: ``ocpp:cp:{cp}:connector:{n}``."""
    if _IDEMPOTENCY.fullmatch(key):
        return keys.TXN_IDEMPOTENCY_PREFIX + "{...}"
    return _NUMBER.sub("{n}", _CHARGER.sub("{cp}", key))


@dataclass
class Snapshot:
    """Redis after ``messages`` messages, settled."""

    messages: int
    seconds: float  # since the first message
    used_memory: int
    streams: int  # what ocpp:inbound and ocpp:history hold, in bytes
    # (type, family) -> (keys, estimated bytes)
    families: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    @property
    def keys(self) -> int:
        return sum(n for n, _ in self.families.values())


def snapshot(system: System, messages: int, started: float) -> Snapshot:
    """Wait for history to be committed and the streams trimmed, then read
    ``used_memory`` and the keys."""
    client = system.client
    system.committed()
    wait_for(
        lambda: all(client.xlen(s) <= TRIMMED_ENTRIES for s in (keys.INBOUND, keys.HISTORY)),
        SETTLE_TIMEOUT_S,
        "the streams trimmed",
        interval=0.1,
    )
    seconds = time.perf_counter() - started
    used = int(client.info("memory")["used_memory"])
    streams = sum(int(client.memory_usage(s, samples=0) or 0) for s in (keys.INBOUND, keys.HISTORY))
    return Snapshot(messages, seconds, used, streams, key_families(client))


def key_families(client: redis.Redis) -> dict[tuple[str, str], tuple[int, int]]:
    """Every key by (type, family), with the family's memory estimated from
    up to SAMPLED_PER_FAMILY of its keys."""
    members: dict[tuple[str, str], list[bytes]] = {}
    names = list(client.scan_iter(count=1000))
    for start in range(0, len(names), 1000):
        batch = names[start : start + 1000]
        pipe = client.pipeline(transaction=False)
        for name in batch:
            pipe.type(name)
        for name, kind in zip(batch, pipe.execute(), strict=True):
            if kind == b"none":
                continue  # expired since the SCAN
            members.setdefault((kind.decode(), family(name.decode())), []).append(name)
    out = {}
    for group, names_ in sorted(members.items(), key=lambda kv: kv[0][1]):
        sample = names_[:SAMPLED_PER_FAMILY]
        pipe = client.pipeline(transaction=False)
        for name in sample:
            pipe.memory_usage(name)
        sizes = [int(x or 0) for x in pipe.execute()]
        out[group] = (len(names_), round(sum(sizes) / len(sizes) * len(names_)))
    return out


def run(args: argparse.Namespace) -> tuple[Snapshot, Snapshot]:
    ttl = str(args.ttl)
    env = {"OCPP_CLOSED_TRANSACTION_TTL_S": ttl, "OCPP_IDEMPOTENCY_TTL_S": ttl}
    options = argparse.Namespace(charge_points=args.chargers, poll_ms=5.0)
    with ExitStack() as stack:
        system = System(
            Setup("ours 1A+1P", 1, history=True), options, stack, "field", processor_env=env
        )
        system.start()
        first_mark = round(args.messages * FIRST_SHARE)
        started = time.perf_counter()
        sent = 0
        shots: list[Snapshot] = []
        for mark in (first_mark, args.messages):
            while sent < mark:
                count = min(args.chunk, mark - sent)
                system.run_phase(f"m{sent}-", count, None)
                sent += count
                print(f"  {sent:,} messages in {time.perf_counter() - started:.0f} s", flush=True)
            shots.append(snapshot(system, sent, started))
        system.check_history()
        system.stop()
    return shots[0], shots[1]


def render(first: Snapshot, last: Snapshot) -> str:
    ratio = last.used_memory / first.used_memory
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    state = (last.used_memory - last.streams) / (first.used_memory - first.streams)
    after, at = f"after {first.messages:,}", f"at {last.messages:,}"
    lines = [
        f"{'':<28}{after:>18}{at:>18}",
        f"{'seconds since the start':<28}{first.seconds:>18.0f}{last.seconds:>18.0f}",
        f"{'used_memory, bytes':<28}{first.used_memory:>18,}{last.used_memory:>18,}",
        f"{'  of it the two streams':<28}{first.streams:>18,}{last.streams:>18,}",
        f"{'keys':<28}{first.keys:>18,}{last.keys:>18,}",
        "",
        f"used_memory at the end / after {FIRST_SHARE:.0%}: {ratio:.2f}x "
        f"(target <= {TARGET_RATIO:g}x) -> {verdict}",
        # The streams' leftovers are a node or two of recent traffic, not state.
        f"the same less the two streams: {state:.2f}x",
        "",
        "keys by type and family: count / estimated bytes (MEMORY USAGE of up to "
        f"{SAMPLED_PER_FAMILY} a family)",
    ]
    groups = sorted(set(first.families) | set(last.families), key=lambda g: (g[1], g[0]))
    width = max(len(f"{t} {f}") for t, f in groups)
    for group in groups:
        a = first.families.get(group, (0, 0))
        b = last.families.get(group, (0, 0))
        lines.append(f"  {group[0] + ' ' + group[1]:<{width}}  {a[0]:>8,} / {a[1]:>12,}"
                     f"  {b[0]:>8,} / {b[1]:>12,}")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=1_000_000, help="messages in all")
    p.add_argument("--chargers", type=int, default=1_000, help="chargers the fleet has")
    p.add_argument("--chunk", type=int, default=50_000, help="messages a phase")
    p.add_argument(
        "--ttl", type=int, default=10, help="closed transactions' and idempotency keys' TTL, s"
    )
    p.add_argument("--quick", action="store_true", help="100,000 messages")
    args = p.parse_args(argv)
    if args.quick:
        args.messages = 100_000
    if min(args.messages, args.chargers, args.chunk, args.ttl) < 1:
        p.error("--messages, --chargers, --chunk and --ttl must be positive")
    if args.messages * FIRST_SHARE < 1:
        p.error(f"--messages must leave {FIRST_SHARE:.0%} of at least one message")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    where = os.environ.get("REDIS_URL") or "a private redis-server"
    database = os.environ.get("DATABASE_URL") or "a private PostgreSQL"
    print(
        f"{args.messages:,} field-mix messages from {args.chargers:,} chargers, flat out in "
        f"phases of {args.chunk:,}; OCPP_CLOSED_TRANSACTION_TTL_S=OCPP_IDEMPOTENCY_TTL_S="
        f"{args.ttl} (production: 7 days); {where}; {database}; "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at start",
        flush=True,
    )
    try:
        first, last = run(args)
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
    print(f"load average {os.getloadavg()[0]:.2f} at the end\n")
    print(render(first, last))


if __name__ == "__main__":
    main()
