"""One simulated OCPP 2.0.1 charging station: the ``ocpp`` package's v201
``ChargePoint`` over a WebSocket, with one EVSE of one connector. What it
shares with the 1.6 charger (CALLs timed, sessions, follow-ups) is
``Simulated``; here is what 2.0.1 says differently: a session as
TransactionEvents (Started, Updated, Ended, numbered by ``seqNo``, named by a
fresh uuid), connector status as Occupied, and a small device model that
GetVariables and SetVariables read and write.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ocpp.v201 import ChargePoint, call, call_result  # type: ignore[import-untyped]

from adapters.sim_charger import Simulated, on, wire_now
from processor.protocol_names import OCPP201

EVSE = 1
CONNECTOR = 1
POWER_W = 7400

IdToken = dict[str, Any]  # {"id_token": ..., "type": ...}, as the ocpp package spells it


@dataclass
class Variable:
    """One variable of the device model: its Actual value, whether
    SetVariables may change it, and what a new value must look like."""

    value: str
    writable: bool = True
    valid: Callable[[str], bool] = str.isdigit

    def set(self, value: str) -> bool:
        """Take ``value`` if it may change and it is valid; whether it did."""
        if not (self.writable and self.valid(value)):
            return False
        self.value = value
        return True


def _boolean(value: str) -> bool:
    return value in ("true", "false")


def _ours(evse: dict[str, Any] | None) -> bool:
    """Whether a command's ``evse`` (none: the whole station) is ours."""
    return evse is None or (evse["id"], evse.get("connector_id", CONNECTOR)) == (EVSE, CONNECTOR)


def device_model() -> dict[tuple[str, str], Variable]:
    """(component, variable) -> Variable: what a fresh station holds."""
    return {
        ("OCPPCommCtrlr", "HeartbeatInterval"): Variable("300"),
        ("SampledDataCtrlr", "TxUpdatedInterval"): Variable("60"),
        ("AuthCtrlr", "AuthorizeRemoteStart"): Variable("false", valid=_boolean),
        ("SecurityCtrlr", "SecurityProfile"): Variable("0", writable=False),
    }


class SimStation(Simulated[str, IdToken], ChargePoint):  # type: ignore[misc]
    protocol = OCPP201
    occupied = "Occupied"

    registration = ""  # the last BootNotification's status
    seq_no = 0  # the next TransactionEvent's, in the active transaction

    @cached_property
    def variables(self) -> dict[tuple[str, str], Variable]:
        return device_model()

    def token(self, id_tag: str) -> IdToken:
        return {"id_token": id_tag, "type": "ISO14443"}

    def authorizes_remote_starts(self) -> bool:
        return self.variables["AuthCtrlr", "AuthorizeRemoteStart"].value == "true"

    # -- CALLs we send --

    def reading(self, context: str, power_w: int | None = None) -> dict[str, Any]:
        """A MeterValue: the energy register (and the power) now."""
        measured = [("Energy.Active.Import.Register", self.meter_wh, "Wh")]
        if power_w is not None:
            measured.append(("Power.Active.Import", power_w, "W"))
        values = [
            {"value": value, "context": context, "measurand": measurand,
             "unit_of_measure": {"unit": unit}}
            for measurand, value, unit in measured
        ]  # fmt: skip
        return {"timestamp": wire_now(), "sampled_value": values}

    async def status(self, status: str) -> None:
        await self.request(
            call.StatusNotification(timestamp=wire_now(), connector_status=status,
                                    evse_id=EVSE, connector_id=CONNECTOR)
        )  # fmt: skip

    async def boot(self, reason: str = "PowerUp") -> None:
        station = {"model": "Sim-201", "vendor_name": "OCPP-Sim",
                   "serial_number": self.id[-25:], "firmware_version": "1.0"}  # fmt: skip
        result = await self.request(call.BootNotification(charging_station=station, reason=reason))
        if result is not None:
            self.registration = result.status
            self.accepted("boot", result.status, "BootNotification")
        if reason == "PowerUp":
            await self.status("Available")
            await self.request(call.Heartbeat())

    async def authorize(self, token: IdToken) -> bool:
        auth = await self.request(call.Authorize(id_token=token))
        return auth is not None and self.accepted(
            "Authorize", auth.id_token_info["status"], token["id_token"]
        )

    async def transaction_event(
        self, event_type: str, trigger: str, tx: str, reading: dict[str, Any],
        info: dict[str, Any], **fields: Any,
    ) -> Any | None:  # fmt: skip
        """One TransactionEvent of ``tx``, numbered next."""
        seq_no, self.seq_no = self.seq_no, self.seq_no + 1
        return await self.request(
            call.TransactionEvent(
                event_type=event_type, timestamp=wire_now(), trigger_reason=trigger,
                seq_no=seq_no, transaction_info={"transaction_id": tx, **info},
                meter_value=[reading], **fields,
            )
        )  # fmt: skip

    async def start_transaction(self, token: IdToken, remote_start_id: int | None) -> str | None:
        tx = str(uuid.uuid4())
        self.seq_no = 0
        info: dict[str, Any] = {"charging_state": "EVConnected"}
        trigger = "Authorized"
        if remote_start_id is not None:
            info["remote_start_id"] = remote_start_id
            trigger = "RemoteStart"
        started = await self.transaction_event(
            "Started", trigger, tx, self.reading("Transaction.Begin"), info,
            evse={"id": EVSE, "connector_id": CONNECTOR}, id_token=token,
        )  # fmt: skip
        if started is None:
            return None
        status = (started.id_token_info or {}).get("status", "Accepted")
        self.accepted("TransactionEvent", status, f"tx {tx}")
        return tx

    async def sample(self, tx: str) -> None:
        await self.transaction_event(
            "Updated", "MeterValuePeriodic", tx, self.reading("Sample.Periodic", POWER_W),
            {"charging_state": "Charging"},
        )  # fmt: skip

    async def stop_transaction(self, tx: str, token: IdToken, reason: str) -> bool:
        trigger = "RemoteStop" if reason == "Remote" else "StopAuthorized"
        ended = await self.transaction_event(
            "Ended", trigger, tx, self.reading("Transaction.End"), {"stopped_reason": reason}
        )
        return ended is not None

    # -- commands we answer --

    @on("RequestStartTransaction")
    def on_request_start(
        self, id_token: IdToken, remote_start_id: int, call_unique_id: str,
        evse_id: int | None = None, **_: Any,
    ) -> Any:  # fmt: skip
        self._answered("RequestStartTransaction")
        if evse_id not in (None, EVSE):
            return call_result.RequestStartTransaction(status="Rejected")
        status = self.start_remotely(call_unique_id, id_token, remote_start_id)
        return call_result.RequestStartTransaction(status=status)

    @on("RequestStopTransaction")
    def on_request_stop(self, transaction_id: str, **_: Any) -> Any:
        self._answered("RequestStopTransaction")
        return call_result.RequestStopTransaction(status=self.stop_remotely(transaction_id))

    @on("Reset")
    def on_reset(self, type: str, evse_id: int | None = None, **_: Any) -> Any:
        self._answered("Reset")
        if evse_id not in (None, EVSE):
            return call_result.Reset(status="Rejected")
        scheduled = type == "OnIdle" and self.session_lock.locked()
        return call_result.Reset(status="Scheduled" if scheduled else "Accepted")

    def _lookup(self, data: dict[str, Any]) -> tuple[dict[str, Any], Variable | None]:
        """A Get/SetVariableData's result, its status Accepted with the
        variable it names, or the status that says why there is none."""
        component, variable = data["component"], data["variable"]
        kind = data.get("attribute_type", "Actual")
        result = {"component": component, "variable": variable, "attribute_type": kind}
        found = self.variables.get((component["name"], variable["name"]))
        # Every component and variable here is one of a kind: no instances, no EVSE.
        if (
            component["name"] not in {c for c, _ in self.variables}
            or {"instance", "evse"} & component.keys()
        ):
            status = "UnknownComponent"
        elif found is None or "instance" in variable:
            status = "UnknownVariable"
        elif kind != "Actual":
            status = "NotSupportedAttributeType"
        else:
            return result | {"attribute_status": "Accepted"}, found
        return result | {"attribute_status": status}, None

    @on("GetVariables")
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        self._answered("GetVariables")
        results = []
        for data in get_variable_data:
            result, found = self._lookup(data)
            if found is not None:
                result["attribute_value"] = found.value
            results.append(result)
        return call_result.GetVariables(get_variable_result=results)

    @on("SetVariables")
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        self._answered("SetVariables")
        results = []
        for data in set_variable_data:
            result, found = self._lookup(data)
            if found is not None and not found.set(data["attribute_value"]):
                result["attribute_status"] = "Rejected"
            results.append(result)
        return call_result.SetVariables(set_variable_result=results)

    @on("TriggerMessage")
    def on_trigger_message(
        self, requested_message: str, call_unique_id: str, evse: dict[str, Any] | None = None,
        **_: Any,
    ) -> Any:  # fmt: skip
        self._answered("TriggerMessage")
        if not _ours(evse):
            return call_result.TriggerMessage(status="Rejected")
        tx = self.active_tx
        triggered: dict[str, Callable[[], Any]] = {
            "BootNotification": lambda: self.boot("Triggered"),
            "Heartbeat": lambda: self.request(call.Heartbeat()),
            "StatusNotification": lambda: self.status(
                self.occupied if self.active_tx is not None else "Available"
            ),
            "MeterValues": lambda: self.request(
                call.MeterValues(evse_id=EVSE, meter_value=[self.reading("Trigger", 0)])
            ),
            "FirmwareStatusNotification": lambda: self.request(
                call.FirmwareStatusNotification(status="Idle")
            ),
            "LogStatusNotification": lambda: self.request(
                call.LogStatusNotification(status="Idle")
            ),
        }
        if tx is not None:
            triggered["TransactionEvent"] = lambda: self._triggered_update(tx)
        work = triggered.get(requested_message)
        if work is None:
            supported = requested_message in ("TransactionEvent", "BootNotification")
            return call_result.TriggerMessage(status="Rejected" if supported else "NotImplemented")
        if requested_message == "BootNotification" and self.registration == "Accepted":
            return call_result.TriggerMessage(status="Rejected")  # F06.FR.17: booted already
        self._later(call_unique_id, work)
        return call_result.TriggerMessage(status="Accepted")

    async def _triggered_update(self, tx: str) -> None:
        if self.active_tx == tx:  # not ended meanwhile
            await self.transaction_event(
                "Updated", "Trigger", tx, self.reading("Trigger", POWER_W),
                {"charging_state": "Charging"},
            )  # fmt: skip

    @on("ChangeAvailability")
    def on_change_availability(
        self, operational_status: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> Any:
        self._answered("ChangeAvailability")
        if not _ours(evse):
            return call_result.ChangeAvailability(status="Rejected")
        self.available = operational_status == "Operative"
        status = "Scheduled" if self.session_lock.locked() else "Accepted"
        return call_result.ChangeAvailability(status=status)

    @on("UnlockConnector")
    def on_unlock_connector(self, evse_id: int, connector_id: int, **_: Any) -> Any:
        self._answered("UnlockConnector")
        if (evse_id, connector_id) != (EVSE, CONNECTOR):
            return call_result.UnlockConnector(status="UnknownConnector")
        if self.active_tx is not None:
            return call_result.UnlockConnector(status="OngoingAuthorizedTransaction")
        return call_result.UnlockConnector(status="Unlocked")

    @on("ClearCache")
    def on_clear_cache(self, **_: Any) -> Any:
        self._answered("ClearCache")
        return call_result.ClearCache(status="Accepted")

    @on("DataTransfer")
    def on_data_transfer(self, vendor_id: str, **_: Any) -> Any:
        self._answered("DataTransfer")
        return call_result.DataTransfer(status="UnknownVendorId")  # it knows no vendor's
