"""One simulated charger: what every simulated charger does whatever its
OCPP version (``Simulated``: CALLs sent and timed, sessions, follow-ups to
commands), and the 1.6 one, the ``ocpp`` package's v16 ``ChargePoint`` over
a WebSocket, running sessions and answering the central system's commands.
The 2.0.1 station is in ``sim_station``.
"""

from __future__ import annotations

import json
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, ClassVar, Generic, TypeVar, cast

import anyio
from anyio.abc import TaskGroup
from ocpp.exceptions import OCPPError  # type: ignore[import-untyped]
from ocpp.routing import on as _ocpp_on  # type: ignore[import-untyped]
from ocpp.v16 import ChargePoint, call, call_result  # type: ignore[import-untyped]
from websockets.asyncio.client import ClientConnection

from adapters.sim_settings import SimSettings
from adapters.sim_stats import Stats
from processor.protocol_names import OCPP16

F = TypeVar("F", bound=Callable[..., Any])
Tx = TypeVar("Tx")  # a transaction's id: 1.6's integer, 2.0.1's text
Token = TypeVar("Token")  # who charges: 1.6's idTag, 2.0.1's idToken {idToken, type}
CONNECTOR = 1
CLOSE_TIMEOUT_S = 5.0


def on(action: str) -> Callable[[F], F]:
    """The ``ocpp`` package's ``@on``, typed."""
    return cast(Callable[[F], F], _ocpp_on(action))


def wire_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


class Simulated(ABC, Generic[Tx, Token]):
    """A simulated charger of any OCPP version: the CALLs it sends (through
    the fleet's token bucket, timed, errors recorded), its sessions, and the
    follow-ups of commands it accepted. A subclass is also the ``ocpp``
    package's ``ChargePoint`` of its version and says what its messages are."""

    protocol: ClassVar[str]
    occupied: ClassVar[str]  # the connector's status during a session
    # The ChargePoint's.
    id: str
    call: Callable[..., Awaitable[Any]]

    def __init__(
        self, cp_id: str, link: Link, settings: SimSettings, stats: Stats, bucket: TokenBucket
    ) -> None:
        # The ChargePoint's, next in a subclass's MRO.
        super().__init__(cp_id, link, response_timeout=settings.timeout)  # type: ignore[call-arg]
        self.link = link
        self.settings = settings
        self.stats = stats
        self.tally = stats.tally(self.protocol)
        self.bucket = bucket
        self.tg: TaskGroup | None = None
        self.stopping = anyio.Event()
        self.session_lock = anyio.Lock()
        self.active_tx: Tx | None = None
        self.stop_requested = anyio.Event()
        self.meter_wh = 0
        self.available = True
        self.follow_ups = 0
        self.settled = anyio.Event()

    # -- what each version says its own way --

    @abstractmethod
    def token(self, id_tag: str) -> Token:
        """The token a local session's driver presents, named ``id_tag``."""

    @abstractmethod
    def authorizes_remote_starts(self) -> bool:
        """Whether a remote start's token is authorized first (its configuration says)."""

    @abstractmethod
    async def boot(self) -> None: ...

    @abstractmethod
    async def status(self, status: str) -> None: ...

    @abstractmethod
    async def authorize(self, token: Token) -> bool:
        """Whether ``token`` may charge (an error recorded if not)."""

    @abstractmethod
    async def start_transaction(self, token: Token, remote_start_id: int | None) -> Tx | None:
        """The started transaction's id; None if it did not start."""

    @abstractmethod
    async def sample(self, tx: Tx) -> None:
        """Meter values during the transaction."""

    @abstractmethod
    async def stop_transaction(self, tx: Tx, token: Token, reason: str) -> bool:
        """Whether the central system took the stop."""

    # -- CALLs we send --

    def accepted(self, what: str, status: str, detail: str) -> bool:
        """Whether ``status`` is Accepted; an error ``{what} {status}`` if not."""
        if status != "Accepted":
            self.stats.error(f"{what} {status}", f"{self.id} {detail}: {status}")
        return status == "Accepted"

    async def request(self, payload: Any) -> Any | None:
        """Send a CALL; its result, or None after recording the error."""
        await self.bucket.take()
        action = type(payload).__name__
        unique_id = str(uuid.uuid4())
        self.tally.sent += 1
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

    async def session(
        self, token: Token, *, remote: bool, remote_start_id: int | None = None
    ) -> None:
        """One charging session on the connector; waits for it to be free."""
        async with self.session_lock:
            checked = not remote or self.authorizes_remote_starts()
            if checked and not await self.authorize(token):
                return
            tx = await self.start_transaction(token, remote_start_id)
            if tx is None:
                return
            self.active_tx = tx
            self.stop_requested = anyio.Event()
            try:
                await self.status(self.occupied)
                for _ in range(self.settings.meter_values):
                    if self.stop_requested.is_set():
                        break
                    self.meter_wh += 250 + len(self.id) % 7
                    await self.sample(tx)
            finally:
                self.active_tx = None
            self.meter_wh += 10  # the end's register above the start's, always
            reason = "Remote" if self.stop_requested.is_set() else "Local"
            stopped = await self.stop_transaction(tx, token, reason)
            await self.status("Available")
            if stopped:
                self.tally.sessions += 1
                if remote:
                    self.tally.remote_sessions += 1

    async def run(self, deadline: float | None) -> None:
        await self.boot()
        limit = self.settings.sessions_per_charger
        done = 0
        while limit is None or done < limit:
            if self.stopping.is_set() or (deadline is not None and time.monotonic() >= deadline):
                break
            await self.session(self.token(f"{self.id}-T"[-20:]), remote=False)
            done += 1
        if self.settings.linger and not self.stopping.is_set():
            with anyio.move_on_after(self.settings.linger):
                await self.stopping.wait()
        while self.follow_ups:  # let what a command started (a session) finish
            await self.settled.wait()

    # -- commands we answer --

    def _answered(self, action: str) -> None:
        self.stats.commands[action] += 1

    def busy(self) -> bool:
        """No session can start now."""
        return self.session_lock.locked() or not self.available or self.stopping.is_set()

    def start_remotely(
        self, unique_id: str, token: Token, remote_start_id: int | None = None
    ) -> str:
        """A remote start's answer: Accepted, and the session starts once it
        has been sent, unless busy."""
        if self.busy():
            return "Rejected"
        self._later(
            unique_id, lambda: self.session(token, remote=True, remote_start_id=remote_start_id)
        )
        return "Accepted"

    def stop_remotely(self, tx: Tx) -> str:
        """A remote stop's answer: Accepted, and the session stops, if ``tx`` is the active one."""
        if self.active_tx is None or tx != self.active_tx:
            return "Rejected"
        self.stop_requested.set()
        return "Accepted"

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


class SimCharger(Simulated[int, str], ChargePoint):  # type: ignore[misc]
    protocol = OCPP16
    occupied = "Charging"

    @cached_property
    def config(self) -> dict[str, tuple[str, bool]]:
        """key -> (value, readonly): what GetConfiguration reads and ChangeConfiguration writes."""
        return {
            "HeartbeatInterval": ("300", False),
            "MeterValueSampleInterval": ("60", False),
            "NumberOfConnectors": ("1", True),
            "AuthorizeRemoteTxRequests": ("false", False),
            "SupportedFeatureProfiles": ("Core,RemoteTrigger", True),
        }

    def token(self, id_tag: str) -> str:
        return id_tag

    def authorizes_remote_starts(self) -> bool:
        return self.config["AuthorizeRemoteTxRequests"][0].lower() == "true"

    # -- CALLs we send --

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
        if result is not None:
            self.accepted("boot", result.status, "BootNotification")
        await self.status("Available")
        await self.request(call.Heartbeat())

    async def authorize(self, id_tag: str) -> bool:
        auth = await self.request(call.Authorize(id_tag=id_tag))
        return auth is not None and self.accepted("Authorize", auth.id_tag_info["status"], id_tag)

    async def start_transaction(self, id_tag: str, remote_start_id: int | None) -> int | None:
        started = await self.request(
            call.StartTransaction(connector_id=CONNECTOR, id_tag=id_tag,
                                  meter_start=self.meter_wh, timestamp=wire_now())
        )  # fmt: skip
        if started is None:
            return None
        tx: int = started.transaction_id
        self.accepted("StartTransaction", started.id_tag_info["status"], f"tx {tx}")
        return tx

    async def sample(self, tx: int) -> None:
        await self.meter_values(tx, 7400)

    async def stop_transaction(self, tx: int, id_tag: str, reason: str) -> bool:
        stopped = await self.request(
            call.StopTransaction(meter_stop=self.meter_wh, timestamp=wire_now(),
                                 transaction_id=tx, reason=reason, id_tag=id_tag)
        )  # fmt: skip
        return stopped is not None

    # -- commands we answer --

    @on("RemoteStartTransaction")
    def on_remote_start(self, id_tag: str, call_unique_id: str, **_: Any) -> Any:
        self._answered("RemoteStartTransaction")
        status = self.start_remotely(call_unique_id, id_tag)
        return call_result.RemoteStartTransaction(status=status)

    @on("RemoteStopTransaction")
    def on_remote_stop(self, transaction_id: int, **_: Any) -> Any:
        self._answered("RemoteStopTransaction")
        return call_result.RemoteStopTransaction(status=self.stop_remotely(transaction_id))

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
