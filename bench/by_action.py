"""What each action of the field mix costs, sent alone: one field-mix phase
(its sessions opened as ``bench.e2e`` opens them), split by action and sent
flat out one action after another, Stops last, to ours (1 adapter + 1
processor, a fresh ``redis-server`` with AOF). Per action: throughput, CPU
a message of Redis and of the processor, Redis memory growth a message (the
inbound stream left out) and Redis's top commands.

    .venv/bin/python -m bench.by_action                   # 200k messages, ~1 min
    .venv/bin/python -m bench.by_action --messages 50000
    .venv/bin/python -m bench.by_action --mix field201    # OCPP 2.0.1's field mix

Sent alone, an action batches only with its own kind, so these are costs
per kind, not shares of the mix's figure (which batches them together).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from contextlib import ExitStack

from bench.e2e import Setup, System
from bench.fieldmix201 import ENDED, STARTED, UPDATED
from bench.traffic import BenchFailure

# Stops close the sessions the others' messages refer to: they go last.
ORDER = (
    "Authorize",
    "StartTransaction",
    "StatusNotification",
    "Heartbeat",
    "BootNotification",
    "MeterValues",
    "StopTransaction",
)
# The same for OCPP 2.0.1's, by label: Started for Start, Updated for MeterValues.
ORDERS = {
    "field": ORDER,
    "field201": tuple({"StartTransaction": STARTED, "MeterValues": UPDATED,
                       "StopTransaction": ENDED}.get(a, a) for a in ORDER),
}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.by_action", description=__doc__.split("\n")[0]
    )
    p.add_argument("--messages", type=int, default=200_000, help="the field-mix phase split")
    p.add_argument("--charge-points", type=int, default=100)
    p.add_argument("--mix", choices=tuple(ORDERS), default="field", help="the field mix split")
    args = p.parse_args(argv)
    args.poll_ms = 5.0
    width = max(map(len, ORDERS[args.mix]))
    print(f"{'action':<{width}} {'messages':>8} {'msgs/s':>8} {'redis µs':>9} {'proc µs':>8} "
          f"{'mem B':>6}  top Redis commands, µs a message (calls a message)")  # fmt: skip
    try:
        with ExitStack() as stack:
            system = System(Setup("ours 1A+1P", 1), args, stack, args.mix)
            system.start()
            system.run_phase("w", 2_000, None)
            whole = system.fleet.phase("t", args.messages)
            system.open(whole)
            for n, action in enumerate(ORDERS[args.mix]):
                part = whole.only(f"x{n}", action)
                count = len(part.messages)
                system.client.config_resetstat()
                memory, before = system.used_memory(), system.cpu()
                tracker = system.exchange(part, None)
                after = system.cpu()
                grown = system.used_memory() - memory
                stats = system.client.info("commandstats")
                top = sorted(stats.items(), key=lambda kv: -int(kv[1]["usec"]))[:4]
                cells = ", ".join(f"{k.removeprefix('cmdstat_')} {v['usec'] / count:.1f} "
                                  f"({v['calls'] / count:.2g})" for k, v in top)  # fmt: skip
                spent = {k: 1e6 * (after[k] - before[k]) / count for k in before}
                seconds = tracker.last_at - tracker.first_at
                print(f"{action:<{width}} {count:>8,} {count / seconds:>8,.0f} "
                      f"{spent['redis']:>9.1f} {spent['processor-1']:>8.1f} "
                      f"{grown / count:>6,.0f}  {cells}", flush=True)  # fmt: skip
            system.stop()
    except BenchFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
