"""The field mix in OCPP 2.0.1's terms, for the end-to-end bench
(``--mix field201``): the same fleet as ``bench/fieldmix.py``'s 1.6 mix,
its sessions told as TransactionEvents, from stations whose envelopes say
``"protocol": "ocpp2.0.1"``.

Per 100 messages it holds 55 TransactionEvent Updated, 17 Heartbeat, 15
StatusNotification, 4 Authorize, 4 TransactionEvent Started, 4
TransactionEvent Ended and 1 BootNotification: the 1.6 mix with each
MeterValues an Updated carrying its meterValue, each StartTransaction a
Started and each StopTransaction an Ended. The cycle, the spreading of the
chargers over it, the clocks and the readings are the 1.6 mix's
(:class:`~bench.fieldmix.FleetBase`); what differs:

* Boot: BootNotification (2.0.1's shape, reason PowerUp), StatusNotification
  Available on EVSE 2 and EVSE 1 (connector 1 each), a Heartbeat. 2.0.1
  has no connector 0, and 1.6's reading with no session has become an
  Updated (below).
* Session: StatusNotification Occupied, Authorize (idToken ISO14443), Started
  (trigger Authorized, chargingState EVConnected, the EVSE, the idToken and
  a ``Transaction.Begin`` reading of the energy register), StatusNotification
  Occupied, 13 Updated with a Heartbeat after every third, Ended (trigger
  EVCommunicationLost, chargingState Idle, stoppedReason EVDisconnected, a
  ``Transaction.End`` reading), StatusNotification Available. Where the 1.6
  mix has a MeterValues with no session between the stop and Available (the
  EV still plugged in), this one has an Updated before the Ended reporting
  chargingState EVConnected: in 2.0.1 the session lasts until the EV leaves.
  The session with a StatusNotification for SuspendedEV also has an Updated
  reporting chargingState SuspendedEV. An Updated names chargingState only
  when it changed (trigger ChargingStateChanged; else MeterValuePeriodic);
  the first one of a session reports Charging.
* 2.0.1's connector statuses are coarser than 1.6's: Preparing, Charging and
  SuspendedEV are all Occupied, so two or three a session repeat Occupied;
  they are kept to keep the mix's 15 StatusNotifications a 100.

An Updated's meterValue holds 1.6's seven sampled values as numbers, with
``unitOfMeasure`` (none for the energy register: Wh is the default). The
transactionId is the station's own, ``{charger}-{n}``, and seqNo counts
each session's events from 0, so every phase can be written before it is
sent: there is no opening. A charger that begins inside a session has it
open already, its Started never sent (the system learns of the session
from its next event, as from a station whose Started is still queued).

Every message must get exactly one reply, a CALLRESULT whose payload is
valid against the action's 2.0.1 response Struct
(``processor.v201.messages.RESPONSES``), and a TransactionEvent naming an
idToken must be told its idTokenInfo (:func:`bench.fieldmix.check_replies`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from bench.fieldmix import (
    FIELD_BLOCKS,
    Charger,
    FleetBase,
    MixName,
    Planned,
    Sample,
    Session,
    Step,
    session_block,
)
from processor.protocol_names import OCPP201
from processor.v201 import messages as m
from processor.v201.messages.enums import (
    ChargingStateEnumType,
    ConnectorStatusEnumType,
    ReadingContextEnumType,
    TriggerReasonEnumType,
)

STARTED: Final = "TransactionEvent Started"
UPDATED: Final = "TransactionEvent Updated"
ENDED: Final = "TransactionEvent Ended"
# The mix per 100 messages, by label (TransactionEvents by eventType).
FIELD201_MIX: Final = {
    UPDATED: 55,
    "Heartbeat": 17,
    "StatusNotification": 15,
    "Authorize": 4,
    STARTED: 4,
    ENDED: 4,
    "BootNotification": 1,
}
FIELD201_BLOCKS: Final = (
    [
        Step("BootNotification"),
        Step("StatusNotification", evse=2),
        Step("StatusNotification"),
        Step("Heartbeat"),
    ],
    *(session_block(idle_meter=idle, suspended=suspended, v201_order=True)
      for idle, suspended in ((True, False), (False, False), (True, False), (False, True))),
)  # fmt: skip
assert len(FIELD201_BLOCKS) == len(FIELD_BLOCKS)
# 1.6's statuses in the cycle, as a 2.0.1 connector reports them.
_CONNECTOR_STATUS: Final[dict[str, ConnectorStatusEnumType]] = {
    "Available": "Available",
    "Preparing": "Occupied",
    "Charging": "Occupied",
    "SuspendedEV": "Occupied",
}
_TOKEN_TYPE: Final = "ISO14443"


class Fleet201(FleetBase):
    """The 2.0.1 field mix's chargers, with :class:`~bench.fieldmix.Fleet`'s
    interface (``phase``); their phases' envelopes name ``ocpp2.0.1``."""

    system_assigns_ids = False
    protocol = OCPP201
    mix: MixName = "field201"

    def __init__(
        self, charge_points: Sequence[str], now: datetime | None = None, seed: int = 12
    ) -> None:
        super().__init__(charge_points, FIELD201_BLOCKS, now, seed)

    def _plan(self, c: Charger, step: Step, power: float) -> Planned:
        at = c.clock
        match step.action:
            case "Heartbeat":
                return Planned(c.index, step.action, m.Heartbeat())
            case "BootNotification":
                station = m.ChargingStationType(model="AC22-3P", vendor_name="BenchVendor",
                                                serial_number=f"SN-{c.index:06d}",
                                                firmware_version="4.2.1")  # fmt: skip
                boot = m.BootNotification(charging_station=station, reason="PowerUp")
                return Planned(c.index, step.action, boot)
            case "StatusNotification":
                status = _CONNECTOR_STATUS[step.status]
                return Planned(c.index, step.action,
                               m.StatusNotification(timestamp=at, connector_status=status,
                                                    evse_id=step.evse,
                                                    connector_id=step.connector))  # fmt: skip
            case "Authorize":
                token = m.IdTokenType(id_token=self._next_tag(c), type=_TOKEN_TYPE)
                return Planned(c.index, step.action, m.Authorize(id_token=token))
            case "StartTransaction":
                return Planned(c.index, "TransactionEvent", self._start(c, at), kind=STARTED)
            case "MeterValues":
                return Planned(c.index, "TransactionEvent", self._updated(c, step, power),
                               kind=UPDATED)  # fmt: skip
            case "StopTransaction":
                return Planned(c.index, "TransactionEvent", self._ended(c), kind=ENDED)
        raise ValueError(f"no payload for {step.action}")

    def _start(self, c: Charger, at: datetime) -> m.TransactionEvent:
        s = self._open(c, at)
        s.ref = f"{c.id}-{c.sessions}"
        return self._event(
            c, s, "Started", "Authorized", "EVConnected",
            self._register(c, at, "Transaction.Begin"),
            evse=m.EVSEType(id=1, connector_id=1),
            id_token=m.IdTokenType(id_token=s.id_tag, type=_TOKEN_TYPE),
        )  # fmt: skip

    def _updated(self, c: Charger, step: Step, power: float) -> m.TransactionEvent:
        s = c.session
        assert s is not None and step.in_session
        state = step.state or "Charging"
        reading = m.MeterValueType(timestamp=c.clock, sampled_value=[
            _sampled(x, "Sample.Periodic") for x in self._samples(c, power)])  # fmt: skip
        if state == s.state:
            return self._event(c, s, "Updated", "MeterValuePeriodic", None, reading)
        return self._event(c, s, "Updated", "ChargingStateChanged", state, reading)

    def _ended(self, c: Charger) -> m.TransactionEvent:
        s = c.session
        assert s is not None
        return self._event(c, s, "Ended", "EVCommunicationLost", "Idle",
                           self._register(c, c.clock, "Transaction.End"),
                           stopped_reason="EVDisconnected")  # fmt: skip

    @staticmethod
    def _event(
        c: Charger,
        s: Session,
        kind: m.TransactionEventEnumType,
        trigger: TriggerReasonEnumType,
        state: ChargingStateEnumType | None,
        reading: m.MeterValueType,
        stopped_reason: m.ReasonEnumType | None = None,
        evse: m.EVSEType | None = None,
        id_token: m.IdTokenType | None = None,
    ) -> m.TransactionEvent:
        """Session ``s``'s next event, its seqNo the next of the session's;
        ``state`` is a charging state it reports a change to."""
        if state is not None:
            s.state = state
        info = m.TransactionType(transaction_id=s.ref, charging_state=state,
                                 stopped_reason=stopped_reason)  # fmt: skip
        event = m.TransactionEvent(event_type=kind, timestamp=reading.timestamp,
                                   trigger_reason=trigger, seq_no=s.seq_no,
                                   transaction_info=info, meter_value=[reading], evse=evse,
                                   id_token=id_token)  # fmt: skip
        s.seq_no += 1
        return event

    @staticmethod
    def _register(c: Charger, at: datetime, context: ReadingContextEnumType) -> m.MeterValueType:
        """The energy register alone, as a session's begin or end reading."""
        sample = Sample(c.register_wh, 0, "Energy.Active.Import.Register", "Wh")
        return m.MeterValueType(timestamp=at, sampled_value=[_sampled(sample, context)])


def _sampled(x: Sample, context: ReadingContextEnumType) -> m.SampledValueType:
    """A sampled value as 2.0.1 spells it: the value a number, its unit in
    ``unitOfMeasure`` unless it is the default (Wh)."""
    unit = None if x.unit == "Wh" else m.UnitOfMeasureType(unit=x.unit)
    return m.SampledValueType(value=round(x.value, x.digits), context=context,
                              measurand=x.measurand, phase=x.phase, location=x.location,
                              unit_of_measure=unit)  # fmt: skip
