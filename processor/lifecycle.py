"""Starting and stopping a long-running service: the SIGTERM contract shared
by the adapter and the processor (stop taking new work, finish what is in
hand, exit 0)."""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import anyio


class Stopper:
    """A stop flag that also interrupts the one blocking wait in progress.

    Loops wrap their idle wait (a blocking Redis read) in :meth:`interruptible`
    and leave their work outside it, so :meth:`stop` cuts the wait short but
    never the work.
    """

    def __init__(self) -> None:
        self.stopping = False
        self._scope: anyio.CancelScope | None = None

    def stop(self) -> None:
        self.stopping = True
        if self._scope is not None:
            self._scope.cancel()

    @contextmanager
    def interruptible(self) -> Iterator[anyio.CancelScope]:
        with anyio.CancelScope() as scope:
            self._scope = scope
            if self.stopping:
                scope.cancel()
            try:
                yield scope
            finally:
                self._scope = None


def freeze_startup_heap() -> None:
    """Move what start-up allocated (modules, clients, scripts, the
    OpenTelemetry SDK when configured) out of the cyclic garbage collector's
    sight: those objects live as long as the process, and each full
    collection would otherwise walk them all again. With telemetry on, that
    walk cost the processor ~1 µs a message. The price: a start-up object
    that later ends up in a reference cycle is never collected; freed by
    reference counting, as nearly all are, it still goes."""
    gc.collect()
    gc.freeze()


# Net new container objects that trigger a young collection (CPython's
# default: 700). A batch of 256 entries keeps some 2,000 alive until it is
# committed, all freed by reference counting after: at 700, two or three
# collections walked each batch for nothing, ~1.3 µs a message in the
# processor (2 with telemetry on, whose spans wait across batches). At this
# threshold the young generation fills only with what really accumulates;
# cyclic garbage waits longer, a few MB at most.
YOUNG_GC_THRESHOLD = 20_000


def collect_less_often() -> None:
    """Raise the young generation's threshold to ``YOUNG_GC_THRESHOLD``,
    keeping the older generations' ratios to it."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, middle, old)


async def run_until_signalled(
    run: Callable[[], Awaitable[None]], stop: Callable[[], None], log: logging.Logger
) -> None:
    """Await ``run()``; on SIGTERM or SIGINT call ``stop()`` and let ``run``
    finish by itself."""
    freeze_startup_heap()
    collect_less_often()
    async with anyio.create_task_group() as tg:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("%s: finishing the work in hand", signal.Signals(signum).name)
                    stop()
                    return

        tg.start_soon(stop_on_signal)
        await run()
        tg.cancel_scope.cancel()
