"""``ocpp-sim``: a fleet of simulated OCPP 1.6 and 2.0.1 chargers and a load
generator.

Each charger is the ``ocpp`` package's ``ChargePoint`` of its version over a
real WebSocket (``{url}/{prefix}-0001`` with the ``ocpp1.6`` or ``ocpp2.0.1``
subprotocol; ``--protocol`` says which, or what share of the fleet speaks
each, assigned by charger number). A 1.6 charger boots (BootNotification,
StatusNotification Available, Heartbeat), then runs its sessions:
Authorize, StartTransaction, StatusNotification Charging, ``--meter-values``
MeterValues with rising energy, StopTransaction, StatusNotification
Available. Meanwhile it answers what the central system sends it
(RemoteStart/StopTransaction, Reset, ChangeConfiguration, GetConfiguration,
TriggerMessage, ChangeAvailability, UnlockConnector, ClearCache,
DataTransfer) and carries out what it accepted. A 2.0.1 station does the
same in its version's words (``sim_station``): TransactionEvents Started,
Updated and Ended for a session, RequestStart/StopTransaction,
Get/SetVariables.

Every CALL's latency (sent to result) is recorded, and every error: CALLERRORs,
timeouts, and replies the ``ocpp`` package finds invalid against the official
schemas. ``--rate`` caps the CALLs per second across the fleet (a token
bucket). A progress line goes to stderr; the summary to stdout (``--json``
for a machine-readable one). Exit code 0 if there were no errors, else 1.
SIGINT/SIGTERM stop starting sessions and end the run (a second one cancels
what is in flight).

    ocpp-sim --url ws://localhost:8080 --chargers 100 --sessions 5 --rate 500
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio
import websockets
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from adapters.sim_charger import CLOSE_TIMEOUT_S, Link, SimCharger, Simulated, TokenBucket
from adapters.sim_settings import SimSettings, parse
from adapters.sim_station import SimStation
from adapters.sim_stats import Stats, render

KINDS: dict[str, type[SimCharger] | type[SimStation]] = {
    kind.protocol: kind for kind in (SimCharger, SimStation)
}


class Fleet:
    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.protocols = settings.protocols
        self.stats = Stats.of(self.protocols)
        self.bucket = TokenBucket(settings.rate)
        self.stopping = anyio.Event()
        self.chargers: list[Simulated[Any, Any]] = []

    def cp_id(self, n: int) -> str:
        return f"{self.settings.prefix}-{n:04d}"

    def stop(self) -> None:
        self.stopping.set()
        self.stats.interrupted = True
        for charger in self.chargers:
            charger.stopping.set()

    async def charger(self, n: int, deadline: float | None) -> None:
        cp_id = self.cp_id(n)
        kind = KINDS[self.protocols[n - 1]]
        url = f"{self.settings.url.rstrip('/')}/{cp_id}"
        try:
            ws = await websockets.connect(
                url, subprotocols=[Subprotocol(kind.protocol)], open_timeout=self.settings.timeout,
                close_timeout=CLOSE_TIMEOUT_S,
            )  # fmt: skip
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            self.stats.error("connect", f"{cp_id}: {type(exc).__name__} {exc}")
            return
        if ws.subprotocol != kind.protocol:
            self.stats.error("connect", f"{cp_id}: {kind.protocol} refused ({ws.subprotocol})")
            await ws.close()
            return
        tally = self.stats.tally(kind.protocol)
        tally.connected += 1
        tally.reached += 1
        charger = kind(cp_id, Link(ws), self.settings, self.stats, self.bucket)
        self.chargers.append(charger)
        if self.stopping.is_set():
            charger.stopping.set()
        try:
            async with anyio.create_task_group() as tg:
                charger.tg = tg

                async def read() -> None:
                    try:
                        await charger.start()
                    except ConnectionClosed as exc:
                        self.stats.error("connection closed", f"{cp_id}: {exc}")
                    tg.cancel_scope.cancel()

                tg.start_soon(read)
                await charger.run(deadline)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT_S):
                await ws.close()
            tally.connected -= 1

    async def progress(self) -> None:
        tty = sys.stderr.isatty()
        while True:
            await anyio.sleep(0.25 if tty else 2.0)
            sys.stderr.write(("\r" if tty else "") + self.stats.progress() + ("" if tty else "\n"))
            sys.stderr.flush()

    async def signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for _ in received:
                if self.stopping.is_set():
                    scope.cancel()  # the second one: stop at once
                else:
                    self.stop()

    async def run(self) -> dict[str, Any]:
        s = self.settings
        deadline = time.monotonic() + s.duration if s.duration > 0 else None
        async with anyio.create_task_group() as outer:
            outer.start_soon(self.signals, outer.cancel_scope)
            if not s.quiet:
                outer.start_soon(self.progress)
            async with anyio.create_task_group() as fleet:
                for n in range(1, s.chargers + 1):
                    fleet.start_soon(self.charger, n, deadline)
            outer.cancel_scope.cancel()
        if not s.quiet:
            sys.stderr.write(("\r" if sys.stderr.isatty() else "") + self.stats.progress() + "\n")
        return self.stats.summary()


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse(argv)
    summary = anyio.run(Fleet(settings).run)
    if settings.json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        sys.stdout.write(render(summary) + "\n")
    sys.stdout.flush()
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
