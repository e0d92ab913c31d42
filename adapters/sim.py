"""``ocpp-sim``: a fleet of simulated OCPP 1.6 chargers and a load generator.

Each charger is the ``ocpp`` package's v16 ``ChargePoint`` over a real
WebSocket (``{url}/{prefix}-0001`` with the ``ocpp1.6`` subprotocol). It
boots (BootNotification, StatusNotification Available, Heartbeat), then runs
its sessions: Authorize, StartTransaction, StatusNotification Charging,
``--meter-values`` MeterValues with rising energy, StopTransaction,
StatusNotification Available. Meanwhile it answers what the central system
sends it (RemoteStart/StopTransaction, Reset, ChangeConfiguration,
GetConfiguration, TriggerMessage, ChangeAvailability, UnlockConnector,
ClearCache, DataTransfer) and carries out what it accepted.

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

import argparse
import json
import math
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar, cast, get_type_hints

import anyio
import msgspec
import websockets
from anyio.abc import TaskGroup
from msgspec import Meta
from ocpp.exceptions import OCPPError  # type: ignore[import-untyped]
from ocpp.routing import on as _ocpp_on  # type: ignore[import-untyped]
from ocpp.v16 import ChargePoint, call, call_result  # type: ignore[import-untyped]
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

F = TypeVar("F", bound=Callable[..., Any])
CONNECTOR = 1
CLOSE_TIMEOUT_S = 5.0


def on(action: str) -> Callable[[F], F]:
    """The ``ocpp`` package's ``@on``, typed."""
    return cast(Callable[[F], F], _ocpp_on(action))


class SimSettings(msgspec.Struct, kw_only=True, frozen=True):
    """Simulated OCPP 1.6 chargers: sessions, commands answered, latency and errors."""

    url: Annotated[str, Meta(description="central system, ws[s]://host:port")] = (
        "ws://localhost:8080"
    )
    chargers: Annotated[int, Meta(ge=1, description="chargers to simulate")] = 10
    sessions: Annotated[
        int,
        Meta(ge=-1, description="sessions per charger (-1: unlimited with --duration, else 1)"),
    ] = -1
    rate: Annotated[
        float, Meta(ge=0, description="max CALLs per second across the fleet (0: unlimited)")
    ] = 0.0
    duration: Annotated[
        float, Meta(ge=0, description="stop starting sessions after this many s (0: no limit)")
    ] = 0.0
    meter_values: Annotated[int, Meta(ge=0, description="MeterValues per session")] = 3
    prefix: Annotated[str, Meta(min_length=1, max_length=40, description="charger id prefix")] = (
        "SIM"
    )
    linger: Annotated[
        float, Meta(ge=0, description="stay connected this many s after the sessions")
    ] = 0.0
    timeout: Annotated[float, Meta(gt=0, description="seconds to wait for a CALL's result")] = 30.0
    json: Annotated[bool, Meta(description="print the summary as JSON")] = False
    quiet: Annotated[bool, Meta(description="no progress line on stderr")] = False

    @property
    def sessions_per_charger(self) -> int | None:
        """None: unlimited (until --duration)."""
        if self.sessions >= 0:
            return self.sessions
        return None if self.duration > 0 else 1


def parse(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> SimSettings:
    """Flags over ``OCPP_SIM_<NAME>`` environment variables over defaults."""
    environ = dict(os.environ) if environ is None else environ
    parser = argparse.ArgumentParser(prog="ocpp-sim", description=SimSettings.__doc__)
    hints = get_type_hints(SimSettings, include_extras=True)
    for f in msgspec.structs.fields(SimSettings):
        flag = "--" + f.name.replace("_", "-")
        env = "OCPP_SIM_" + f.name.upper()
        meta = [m for m in getattr(hints[f.name], "__metadata__", ()) if isinstance(m, Meta)]
        text = next((m.description for m in meta if m.description), "")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action="store_true", default=None, help=f"{text} [env {env}]")
        else:
            help_ = f"{text} [env {env}, default {f.default!r}]"
            parser.add_argument(flag, default=None, help=help_)
    ns = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for f in msgspec.structs.fields(SimSettings):
        value = getattr(ns, f.name)
        if value is None:
            value = environ.get("OCPP_SIM_" + f.name.upper())
        if value is not None:
            values[f.name] = value
    try:
        return msgspec.convert(values, SimSettings, strict=False)
    except msgspec.ValidationError as exc:
        parser.error(f"invalid setting: {exc}")


def wire_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- measurements -------------------------------------------------------------------


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


class TokenBucket:
    """At most ``rate`` takes per second on average; bursts of up to rate/10 (>= 1)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate / 10)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = anyio.Lock()

    async def take(self) -> None:
        if self.rate <= 0:
            return
        async with self._lock:  # first come, first served
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await anyio.sleep((1 - self.tokens) / self.rate)


# --- one charger ------------------------------------------------------------------


class Link:
    """The charger's socket as the ``ocpp`` ChargePoint sees it; notes the ids
    of CALLERRORs received and of results sent (so a follow-up to a command
    goes out only after the command's result)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.call_errors: set[str] = set()
        self.answered: dict[str, anyio.Event] = {}

    async def recv(self) -> str:
        message = await self.ws.recv()
        text = message.decode() if isinstance(message, bytes) else message
        if text.lstrip().startswith("[4"):
            with suppress(ValueError, IndexError):
                self.call_errors.add(str(json.loads(text)[1]))
        return text

    async def send(self, message: str) -> None:
        await self.ws.send(message)
        if message.startswith(("[3", "[4")):
            unique_id = str(json.loads(message)[1])
            self.answered.setdefault(unique_id, anyio.Event()).set()

    async def sent_reply(self, unique_id: str, wait_s: float) -> None:
        event = self.answered.setdefault(unique_id, anyio.Event())
        with anyio.move_on_after(wait_s):
            await event.wait()
        self.answered.pop(unique_id, None)


class SimCharger(ChargePoint):  # type: ignore[misc]
    def __init__(
        self, cp_id: str, link: Link, settings: SimSettings, stats: Stats, bucket: TokenBucket
    ) -> None:
        super().__init__(cp_id, link, response_timeout=settings.timeout)
        self.link = link
        self.settings = settings
        self.stats = stats
        self.bucket = bucket
        self.tg: TaskGroup | None = None
        self.stopping = anyio.Event()
        self.session_lock = anyio.Lock()
        self.active_tx: int | None = None
        self.stop_requested = anyio.Event()
        self.meter_wh = 0
        self.available = True
        self.follow_ups = 0
        self.settled = anyio.Event()
        self.config: dict[str, tuple[str, bool]] = {
            "HeartbeatInterval": ("300", False),
            "MeterValueSampleInterval": ("60", False),
            "NumberOfConnectors": ("1", True),
            "AuthorizeRemoteTxRequests": ("false", False),
            "SupportedFeatureProfiles": ("Core,RemoteTrigger", True),
        }

    # -- CALLs we send --

    async def request(self, payload: Any) -> Any | None:
        """Send a CALL; its result, or None after recording the error."""
        await self.bucket.take()
        action = type(payload).__name__
        unique_id = str(uuid.uuid4())
        self.stats.sent += 1
        began = time.perf_counter()
        try:
            result = await self.call(payload, suppress=False, unique_id=unique_id)
        except TimeoutError:
            self.stats.error(
                "timeout", f"{self.id} {action}: no result in {self.settings.timeout}s"
            )
            return None
        except OCPPError as exc:
            if unique_id in self.link.call_errors:
                self.link.call_errors.discard(unique_id)
                kind = f"CALLERROR {type(exc).__name__}"
            else:
                kind = f"invalid {type(exc).__name__}"
            self.stats.error(kind, f"{self.id} {action}: {type(exc).__name__} {exc}")
            return None
        except (TypeError, ValueError) as exc:  # a result the dataclass refuses
            self.stats.error("invalid result", f"{self.id} {action}: {exc}")
            return None
        self.stats.latencies_ms.append((time.perf_counter() - began) * 1000)
        return result

    async def status(self, status: str) -> None:
        await self.request(
            call.StatusNotification(
                connector_id=CONNECTOR, error_code="NoError", status=status, timestamp=wire_now()
            )
        )

    async def meter_values(self, transaction_id: int | None, power_w: int) -> None:
        sample = {
            "timestamp": wire_now(),
            "sampled_value": [
                {"value": str(self.meter_wh), "context": "Sample.Periodic",
                 "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": str(power_w), "context": "Sample.Periodic",
                 "measurand": "Power.Active.Import", "unit": "W"},
            ],
        }  # fmt: skip
        await self.request(
            call.MeterValues(
                connector_id=CONNECTOR, meter_value=[sample], transaction_id=transaction_id
            )
        )

    async def boot(self) -> None:
        result = await self.request(
            call.BootNotification(
                charge_point_model="Sim-1", charge_point_vendor="OCPP-Sim",
                charge_point_serial_number=self.id, firmware_version="1.0",
            )
        )  # fmt: skip
        if result is not None and result.status != "Accepted":
            self.stats.error(f"boot {result.status}", f"{self.id} BootNotification {result.status}")
        await self.status("Available")
        await self.request(call.Heartbeat())

    async def session(self, id_tag: str, *, remote: bool) -> None:
        """One charging session on the connector; waits for it to be free."""
        async with self.session_lock:
            if not remote:
                auth = await self.request(call.Authorize(id_tag=id_tag))
                if auth is None:
                    return
                if auth.id_tag_info["status"] != "Accepted":
                    status = auth.id_tag_info["status"]
                    self.stats.error(f"Authorize {status}", f"{self.id} {id_tag}: {status}")
                    return
            meter_start = self.meter_wh
            started = await self.request(
                call.StartTransaction(connector_id=CONNECTOR, id_tag=id_tag,
                                      meter_start=meter_start, timestamp=wire_now())
            )  # fmt: skip
            if started is None:
                return
            tx: int = started.transaction_id
            if started.id_tag_info["status"] != "Accepted":
                status = started.id_tag_info["status"]
                self.stats.error(f"StartTransaction {status}", f"{self.id} tx {tx}: {status}")
            self.active_tx = tx
            self.stop_requested = anyio.Event()
            try:
                await self.status("Charging")
                for _ in range(self.settings.meter_values):
                    if self.stop_requested.is_set():
                        break
                    self.meter_wh += 250 + len(self.id) % 7
                    await self.meter_values(tx, 7400)
            finally:
                self.active_tx = None
            self.meter_wh += 10  # meterStop > meterStart, always
            reason = "Remote" if self.stop_requested.is_set() else "Local"
            stopped = await self.request(
                call.StopTransaction(meter_stop=self.meter_wh, timestamp=wire_now(),
                                     transaction_id=tx, reason=reason, id_tag=id_tag)
            )  # fmt: skip
            await self.status("Available")
            if stopped is not None:
                self.stats.sessions += 1
                if remote:
                    self.stats.remote_sessions += 1

    async def run(self, deadline: float | None) -> None:
        await self.boot()
        limit = self.settings.sessions_per_charger
        done = 0
        while limit is None or done < limit:
            if self.stopping.is_set() or (deadline is not None and time.monotonic() >= deadline):
                break
            await self.session(f"{self.id}-T"[-20:], remote=False)
            done += 1
        if self.settings.linger and not self.stopping.is_set():
            with anyio.move_on_after(self.settings.linger):
                await self.stopping.wait()
        while self.follow_ups:  # let what a command started (a session) finish
            await self.settled.wait()

    # -- commands we answer --

    def _answered(self, action: str) -> None:
        self.stats.commands[action] += 1

    def _later(self, unique_id: str, work: Callable[[], Any]) -> None:
        """Run ``work`` once the command's result has been sent."""

        async def follow_up() -> None:
            try:
                await self.link.sent_reply(unique_id, self.settings.timeout)
                await work()
            finally:
                self.follow_ups -= 1
                if not self.follow_ups:
                    self.settled.set()

        assert self.tg is not None
        self.follow_ups += 1
        self.settled = anyio.Event()
        self.tg.start_soon(follow_up)

    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag: str, call_unique_id: str, **_: Any) -> Any:
        self._answered("RemoteStartTransaction")
        if self.session_lock.locked() or not self.available or self.stopping.is_set():
            return call_result.RemoteStartTransaction(status="Rejected")
        self._later(call_unique_id, lambda: self.session(id_tag, remote=True))
        return call_result.RemoteStartTransaction(status="Accepted")

    @on("RemoteStopTransaction")
    def on_remote_stop(self, transaction_id: int, **_: Any) -> Any:
        self._answered("RemoteStopTransaction")
        if self.active_tx is None or transaction_id != self.active_tx:
            return call_result.RemoteStopTransaction(status="Rejected")
        self.stop_requested.set()
        return call_result.RemoteStopTransaction(status="Accepted")

    @on("Reset")
    def on_reset(self, type: str, **_: Any) -> Any:
        self._answered("Reset")
        return call_result.Reset(status="Accepted")

    @on("ChangeConfiguration")
    def on_change_configuration(self, key: str, value: str, **_: Any) -> Any:
        self._answered("ChangeConfiguration")
        current = self.config.get(key)
        if current is not None and current[1]:
            return call_result.ChangeConfiguration(status="Rejected")
        self.config[key] = (value, False)
        return call_result.ChangeConfiguration(status="Accepted")

    @on("GetConfiguration")
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        self._answered("GetConfiguration")
        wanted = key or list(self.config)
        known = [
            {"key": k, "readonly": self.config[k][1], "value": self.config[k][0]}
            for k in wanted
            if k in self.config
        ]
        unknown = [k for k in wanted if k not in self.config]
        return call_result.GetConfiguration(configuration_key=known, unknown_key=unknown or None)

    @on("TriggerMessage")
    def on_trigger_message(
        self, requested_message: str, call_unique_id: str, connector_id: int | None = None, **_: Any
    ) -> Any:
        self._answered("TriggerMessage")
        triggered: dict[str, Callable[[], Any]] = {
            "BootNotification": lambda: self.request(
                call.BootNotification(charge_point_model="Sim-1", charge_point_vendor="OCPP-Sim")
            ),
            "Heartbeat": lambda: self.request(call.Heartbeat()),
            "StatusNotification": lambda: self.status(
                "Charging" if self.active_tx is not None else "Available"
            ),
            "MeterValues": lambda: self.meter_values(self.active_tx, 0),
            "DiagnosticsStatusNotification": lambda: self.request(
                call.DiagnosticsStatusNotification(status="Idle")
            ),
            "FirmwareStatusNotification": lambda: self.request(
                call.FirmwareStatusNotification(status="Idle")
            ),
        }
        work = triggered.get(requested_message)
        if work is None or connector_id not in (None, 0, CONNECTOR):
            return call_result.TriggerMessage(status="Rejected")
        self._later(call_unique_id, work)
        return call_result.TriggerMessage(status="Accepted")

    @on("ChangeAvailability")
    def on_change_availability(self, connector_id: int, type: str, **_: Any) -> Any:
        self._answered("ChangeAvailability")
        if connector_id not in (0, CONNECTOR):
            return call_result.ChangeAvailability(status="Rejected")
        self.available = type == "Operative"
        status = "Scheduled" if self.session_lock.locked() else "Accepted"
        return call_result.ChangeAvailability(status=status)

    @on("UnlockConnector")
    def on_unlock_connector(self, connector_id: int, **_: Any) -> Any:
        self._answered("UnlockConnector")
        status = "Unlocked" if connector_id == CONNECTOR else "NotSupported"
        return call_result.UnlockConnector(status=status)

    @on("ClearCache")
    def on_clear_cache(self, **_: Any) -> Any:
        self._answered("ClearCache")
        return call_result.ClearCache(status="Accepted")

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        self._answered("DataTransfer")
        return call_result.DataTransfer(status="Rejected")


# --- the fleet ---------------------------------------------------------------------


class Fleet:
    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self.stats = Stats(chargers=settings.chargers)
        self.bucket = TokenBucket(settings.rate)
        self.stopping = anyio.Event()
        self.chargers: list[SimCharger] = []

    def cp_id(self, n: int) -> str:
        return f"{self.settings.prefix}-{n:04d}"

    def stop(self) -> None:
        self.stopping.set()
        self.stats.interrupted = True
        for charger in self.chargers:
            charger.stopping.set()

    async def charger(self, n: int, deadline: float | None) -> None:
        cp_id = self.cp_id(n)
        url = f"{self.settings.url.rstrip('/')}/{cp_id}"
        try:
            ws = await websockets.connect(
                url, subprotocols=[Subprotocol("ocpp1.6")], open_timeout=self.settings.timeout,
                close_timeout=CLOSE_TIMEOUT_S,
            )  # fmt: skip
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            self.stats.error("connect", f"{cp_id}: {type(exc).__name__} {exc}")
            return
        self.stats.connected += 1
        charger = SimCharger(cp_id, Link(ws), self.settings, self.stats, self.bucket)
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
            self.stats.connected -= 1

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
        connected_peak = 0
        async with anyio.create_task_group() as outer:
            outer.start_soon(self.signals, outer.cancel_scope)
            if not s.quiet:
                outer.start_soon(self.progress)
            async with anyio.create_task_group() as fleet:
                for n in range(1, s.chargers + 1):
                    fleet.start_soon(self.charger, n, deadline)
            connected_peak = len(self.chargers)
            outer.cancel_scope.cancel()
        if not s.quiet:
            sys.stderr.write(("\r" if sys.stderr.isatty() else "") + self.stats.progress() + "\n")
        summary = self.stats.summary()
        summary["connected"] = connected_peak
        return summary


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
