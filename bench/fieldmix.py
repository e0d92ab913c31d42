"""Traffic shaped like a fleet in service, for the end-to-end bench.

Per 100 messages the field mix holds 55 MeterValues, 17 Heartbeat, 15
StatusNotification, 4 Authorize, 4 StartTransaction, 4 StopTransaction and
1 BootNotification. Each charger runs the same 100-message cycle, made of
five blocks (a boot, then four sessions), from a point of its own: charger
``k`` of ``K`` from message ``100 k / K``, so the fleet's sessions start at
times spread over the cycle rather than in bursts. A charger that begins
inside a session has it open already: the first phase's opening (below)
starts it, and that StartTransaction is never part of a phase. Message
``i`` of a phase comes from charger ``i % K``, as with the Heartbeats.

* Boot: BootNotification, StatusNotification Available on connectors 0 and
  1, a Heartbeat and a MeterValues with no session (``Sample.Clock``).
* Session: StatusNotification Preparing, Authorize, StartTransaction,
  StatusNotification Charging, 13 MeterValues with a Heartbeat after every
  third, StopTransaction, StatusNotification Available. Two of the four have
  a MeterValues with no session between the stop and Available (the EV still
  plugged in); one a StatusNotification SuspendedEV before its last sample.

A MeterValues holds one meterValue of seven sampledValues: the energy
register (Wh), active power (W), the current on L1, L2 and L3 (A), the
voltage (V) at the outlet and the EV's state of charge (Percent). In a
session they carry its transactionId; meterStop is the register at the
stop, above meterStart since the register grows while a session charges.

Timestamps are distinct: each charger's clock starts in the past (30 days
ago, plus ``k`` ms for charger ``k``, so no two chargers share a timestamp)
and moves 10 s a message, so every newest-wins write the processor makes is
a newer value, as in the field, and none lies in the future.

**How sessions learn their transactionId.** The central system assigns it
in its StartTransaction reply, so the traffic cannot be written before the
system has answered. Each phase is planned first; before it is timed, an
untimed opening sends that phase's StartTransactions and reads the ids from
the replies; then the phase is rendered and sent whole, StartTransactions
included, each identical to its opening twin under a new message id: a
charger retrying a start whose answer it lost. The processor answers such a
retry from its idempotency key with the same transactionId (the bench
checks it does), so a timed StartTransaction costs the lookup path of the
open-transaction script, not the path that creates the record: 4 messages
in 100 run a few cheaper commands than in the field. Sessions open at the
end of a phase go on into the next with the id already known.

Every message must get exactly one reply, a CALLRESULT whose payload is
valid against its action's response Struct (:func:`check_replies`).

The cycle, the spreading, the clocks and the readings are the fleet's
(:class:`FleetBase`), shared with the same mix in OCPP 2.0.1's terms
(``bench/fieldmix201.py``); :class:`Fleet` spells them in 1.6's.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, Literal, NamedTuple

import msgspec

from processor import clock
from processor.envelope import Call, Envelope
from processor.protocol_names import OCPP201
from processor.v16 import messages as m
from processor.v16.messages.core import ChargePointStatus
from processor.v16.messages.metering import MeterValue, ReadingContext, SampledValue
from processor.v201 import messages as v201

# field201 is the field mix in OCPP 2.0.1's terms (bench/fieldmix201.py).
MixName = Literal["field", "field201", "heartbeat"]

# The field mix per 100 messages (the shape of a fleet in service).
FIELD_MIX: Final = {
    "MeterValues": 55,
    "Heartbeat": 17,
    "StatusNotification": 15,
    "Authorize": 4,
    "StartTransaction": 4,
    "StopTransaction": 4,
    "BootNotification": 1,
}
STEP: Final = timedelta(seconds=10)
HISTORY: Final = timedelta(days=30)
# A three-phase AC charger at 11 kW.
_VOLTS = 230.0
_AMPS = 16.0


@dataclass(frozen=True, slots=True)
class Step:
    """One message of a charger's cycle, before it has a payload."""

    action: str
    connector: int = 1
    status: ChargePointStatus = "Available"
    in_session: bool = False
    # OCPP 2.0.1 only: the EVSE, and the charging state a session's reading
    # reports (None: charging; a state other than that draws no power).
    evse: int = 1
    state: v201.ChargingStateEnumType | None = None


def session_block(idle_meter: bool, suspended: bool, v201_order: bool = False) -> list[Step]:
    """One session's steps. In 2.0.1's order (``v201_order``) the EV still
    plugged in after charging is still in the session (it ends when the EV
    leaves), and the suspension is also a reading of its own."""
    meters: list[Step] = []
    for n in range(1, 14):
        if suspended and n == 13:
            meters.append(Step("StatusNotification", status="SuspendedEV"))
            if v201_order:
                meters.append(Step("MeterValues", in_session=True, state="SuspendedEV"))
        meters.append(Step("MeterValues", in_session=True))
        if n % 3 == 0:
            meters.append(Step("Heartbeat"))
    idle = [Step("MeterValues", in_session=v201_order, state="EVConnected")] if idle_meter else []
    return [
        Step("StatusNotification", status="Preparing"),
        Step("Authorize"),
        Step("StartTransaction"),
        Step("StatusNotification", status="Charging"),
        *meters,
        *(idle if v201_order else []),
        Step("StopTransaction"),
        *([] if v201_order else idle),
        Step("StatusNotification", status="Available"),
    ]


FIELD_BLOCKS: Final = (
    [
        Step("BootNotification"),
        Step("StatusNotification", connector=0),
        Step("StatusNotification"),
        Step("Heartbeat"),
        Step("MeterValues"),
    ],
    session_block(idle_meter=True, suspended=False),
    session_block(idle_meter=False, suspended=False),
    session_block(idle_meter=True, suspended=False),
    session_block(idle_meter=False, suspended=True),
)
HEARTBEAT_BLOCKS: Final = ([Step("Heartbeat")],)


@dataclass(slots=True)
class Session:
    id_tag: str
    meter_start: int
    started: datetime
    # 1.6: the id the system assigned; 2.0.1: the station's own (``ref``),
    # the next event's seqNo and the charging state it last reported.
    transaction_id: int | None = None
    ref: str = ""
    seq_no: int = 0
    state: str | None = None


@dataclass(slots=True)
class Charger:
    """One charger's place in its cycle and what it has measured so far."""

    index: int
    id: str
    cycle: list[Step]
    clock: datetime
    register_wh: float
    position: int = 0
    sessions: int = 0
    soc: float = 50.0
    session: Session | None = None


@dataclass(slots=True)
class Planned:
    """One message of a phase: its charger, action and payload (a 1.6
    session's MeterValues and StopTransaction get the transactionId at
    rendering); ``kind`` names it more closely than its action where the
    mix counts it apart (2.0.1's ``TransactionEvent Started``)."""

    charger: int
    action: str
    payload: msgspec.Struct
    session: Session | None = None
    kind: str = ""

    @property
    def label(self) -> str:
        return self.kind or self.action


class Sample(NamedTuple):
    """One sampled value before either version spells it: shown with
    ``digits`` decimals."""

    value: float
    digits: int
    measurand: str
    unit: str
    phase: str | None = None
    location: str = "Outlet"


@dataclass
class Phase:
    """The messages of one phase, in sending order, with message ids
    ``{name}{i}``; its opening (the StartTransactions, ids
    ``{name}o{j}``) must be answered and bound before it is rendered.
    Its envelopes name ``protocol`` if set (the version our gateway adds)."""

    name: str
    charge_points: Sequence[str]
    messages: list[Planned]
    starts: list[int] = field(default_factory=list)
    # Sessions in progress when the fleet was created: opened, never sent.
    preopened: list[Planned] = field(default_factory=list)
    protocol: str | None = None

    @property
    def _openings(self) -> list[Planned]:
        return [*self.preopened, *(self.messages[i] for i in self.starts)]

    @property
    def opening_name(self) -> str:
        return f"{self.name}o"

    def opening(self, timestamp: str) -> tuple[list[bytes], list[int]]:
        """The StartTransaction envelopes to send first, and their chargers."""
        out = []
        for j, p in enumerate(self._openings):
            out.append(_envelope(self.charge_points[p.charger], f"{self.opening_name}{j}",
                                 p.action, p.payload, timestamp))  # fmt: skip
        return out, [p.charger for p in self._openings]

    def bind(self, replies: Sequence[bytes | None]) -> None:
        """Give each session started in this phase the id its opening reply carried."""
        for p, raw in zip(self._openings, replies, strict=True):
            session = p.session
            assert session is not None and raw is not None
            session.transaction_id = _start_reply.decode(raw).payload[2].transaction_id

    def envelopes(self, timestamp: str) -> list[bytes]:
        """Every message, encoded; fails if a session's id is still unknown."""
        out = []
        for i, p in enumerate(self.messages):
            payload = p.payload
            if p.session is not None and p.action != "StartTransaction":
                tid = p.session.transaction_id
                if tid is None:
                    raise ValueError(f"message {i}: its session has no transactionId yet")
                payload = msgspec.structs.replace(payload, transaction_id=tid)
            out.append(_envelope(self.charge_points[p.charger], f"{self.name}{i}", p.action,
                                 payload, timestamp, self.protocol))  # fmt: skip
        return out

    @property
    def actions(self) -> Counter[str]:
        """Messages by label (action, or kind where the mix names one)."""
        return Counter(p.label for p in self.messages)

    @property
    def routes(self) -> list[int]:
        """Each message's charger, by index."""
        return [p.charger for p in self.messages]

    def only(self, name: str, label: str) -> Phase:
        """This phase's messages of one label, in order, as a phase of its
        own (named ``name``) whose sessions are this one's; bound when it is."""
        part = [p for p in self.messages if p.label == label]
        return Phase(name, self.charge_points, part, protocol=self.protocol)


class FleetBase:
    """The chargers of one run and their state, which carries over from one
    phase to the next (clocks, registers, open sessions): what either
    version's field mix shares. A subclass spells each step as a message
    (:meth:`_plan`) and opens a session (:meth:`_start`)."""

    # Whether the central system assigns transactionIds (1.6): then a
    # session open when the fleet is created is opened by the first phase's
    # opening; otherwise (2.0.1: the station's own ids) it is simply joined.
    system_assigns_ids: ClassVar[bool] = True
    protocol: ClassVar[str | None] = None
    mix: MixName

    def __init__(
        self,
        charge_points: Sequence[str],
        blocks: Sequence[list[Step]],
        now: datetime | None = None,
        seed: int = 12,
    ) -> None:
        self.charge_points = list(charge_points)
        self._random = random.Random(seed)
        cycle = [s for block in blocks for s in block]
        origin = (now or datetime.now(UTC)).replace(microsecond=0) - HISTORY
        self.chargers = []
        self._preopened: list[Planned] = []
        for k, cp in enumerate(self.charge_points):
            c = Charger(k, cp, cycle, origin + timedelta(milliseconds=k),
                        self._random.uniform(1e6, 5e6))  # fmt: skip
            self._begin_at(c, len(cycle) * k // len(self.charge_points))
            self.chargers.append(c)

    def _begin_at(self, c: Charger, position: int) -> None:
        """Put ``c`` at ``position`` of its cycle, with the session it is in
        there (if any) already open, as if started before the bench began."""
        if c.cycle[position].action == "StartTransaction":
            position -= 1  # from its Authorize, which names the tag
        c.position = position
        started = None
        for n, step in enumerate(c.cycle[:position]):
            if step.action == "StartTransaction":
                started = n
            elif step.action == "StopTransaction":
                started = None
        c.sessions = sum(s.action == "StartTransaction" for s in c.cycle[:position])
        if started is not None:
            at = c.clock - (position - started) * STEP
            c.sessions -= 1
            start = self._start(c, at)
            if self.system_assigns_ids:
                self._preopened.append(Planned(c.index, "StartTransaction", start, c.session))

    def phase(self, name: str, count: int) -> Phase:
        """Plan the next ``count`` messages, message ``i`` from charger
        ``i % len(charge_points)``."""
        messages, starts = [], []
        n = len(self.chargers)
        for i in range(count):
            planned = self._next(self.chargers[i % n])
            if planned.action == "StartTransaction":
                starts.append(i)
            messages.append(planned)
        preopened, self._preopened = self._preopened, []
        return Phase(name, self.charge_points, messages, starts, preopened, self.protocol)

    def _next(self, c: Charger) -> Planned:
        step = c.cycle[c.position % len(c.cycle)]
        c.position += 1
        c.clock += STEP
        if c.clock > datetime.now(UTC):
            raise ValueError(f"{c.id}'s clock ran past now: plan fewer messages per charger")
        power = 0.0
        if c.session is not None and step.action != "StopTransaction" and step.state is None:
            power = self._random.uniform(0.9, 1.0) * 3 * _VOLTS * _AMPS
            c.register_wh += power * STEP.total_seconds() / 3600
            c.soc = min(100.0, c.soc + 0.4)
        planned = self._plan(c, step, power)
        if step.action == "StopTransaction":
            c.session = None
        return planned

    def _plan(self, c: Charger, step: Step, power: float) -> Planned:
        raise NotImplementedError

    def _start(self, c: Charger, at: datetime) -> msgspec.Struct:
        raise NotImplementedError

    def _open(self, c: Charger, at: datetime) -> Session:
        # Distinct tags: the opening starts a phase's sessions all at once,
        # and one tag in two open sessions would be ConcurrentTx.
        c.session = s = Session(self._next_tag(c), int(c.register_wh), at)
        c.sessions += 1
        c.soc = self._random.uniform(15, 60)
        return s

    @staticmethod
    def _next_tag(c: Charger) -> str:
        # Authorize comes before its StartTransaction and names the same tag.
        return f"T{c.index:05d}S{c.sessions:08d}"

    def _samples(self, c: Charger, power: float) -> list[Sample]:
        """A reading's seven sampled values: the energy register, active
        power, the current on L1, L2 and L3, the voltage, the EV's SoC."""
        volts = [self._random.uniform(225, 235) for _ in range(3)]
        amps = [power / 3 / v for v in volts]
        return [
            Sample(c.register_wh, 0, "Energy.Active.Import.Register", "Wh"),
            Sample(power, 0, "Power.Active.Import", "W"),
            *(Sample(a, 2, "Current.Import", "A", phase=ph)
              for a, ph in zip(amps, ("L1", "L2", "L3"), strict=True)),
            Sample(volts[0], 1, "Voltage", "V", phase="L1-N"),
            Sample(c.soc, 0, "SoC", "Percent", location="EV"),
        ]  # fmt: skip


class Fleet(FleetBase):
    """The 1.6 field mix (or Heartbeats only, ``mix="heartbeat"``)."""

    def __init__(
        self,
        charge_points: Sequence[str],
        mix: MixName = "field",
        now: datetime | None = None,
        seed: int = 12,
    ) -> None:
        self.mix = mix
        super().__init__(charge_points, FIELD_BLOCKS if mix == "field" else HEARTBEAT_BLOCKS,
                         now, seed)  # fmt: skip

    def _plan(self, c: Charger, step: Step, power: float) -> Planned:
        payload, session = self._payload(c, step, power), c.session
        if step.action not in ("StartTransaction", "StopTransaction") and not step.in_session:
            session = None
        return Planned(c.index, step.action, payload, session)

    def _payload(self, c: Charger, step: Step, power: float) -> msgspec.Struct:
        at = c.clock
        match step.action:
            case "Heartbeat":
                return m.Heartbeat()
            case "BootNotification":
                return m.BootNotification(charge_point_vendor="BenchVendor",
                                          charge_point_model="AC22-3P",
                                          charge_point_serial_number=f"SN-{c.index:06d}",
                                          firmware_version="4.2.1")  # fmt: skip
            case "StatusNotification":
                return m.StatusNotification(connector_id=step.connector, error_code="NoError",
                                            status=step.status, timestamp=at)  # fmt: skip
            case "Authorize":
                return m.Authorize(id_tag=self._next_tag(c))
            case "StartTransaction":
                return self._start(c, at)
            case "StopTransaction":
                assert c.session is not None
                return m.StopTransaction(meter_stop=int(c.register_wh), timestamp=at,
                                         transaction_id=0, id_tag=c.session.id_tag,
                                         reason="EVDisconnected")  # fmt: skip
            case "MeterValues":
                return m.MeterValues(connector_id=1, meter_value=[self._reading(c, power, step)],
                                     transaction_id=0 if step.in_session else None)  # fmt: skip
        raise ValueError(f"no payload for {step.action}")

    def _start(self, c: Charger, at: datetime) -> m.StartTransaction:
        s = self._open(c, at)
        return m.StartTransaction(
            connector_id=1, id_tag=s.id_tag, meter_start=s.meter_start, timestamp=at
        )

    def _reading(self, c: Charger, power: float, step: Step) -> MeterValue:
        context: ReadingContext = "Sample.Periodic" if step.in_session else "Sample.Clock"
        return MeterValue(
            timestamp=c.clock,
            sampled_value=[
                SampledValue(value=f"{s.value:.{s.digits}f}", context=context, unit=s.unit,
                             measurand=s.measurand, phase=s.phase, location=s.location)
                for s in self._samples(c, power)
            ],
        )  # fmt: skip


_encoder: Final = msgspec.json.Encoder()


def _envelope(
    cp: str,
    mid: str,
    action: str,
    payload: msgspec.Struct,
    timestamp: str,
    protocol: str | None = None,
) -> bytes:
    """The envelope the ws-server would write for this CALL (``protocol``
    after the contract's fields, as our gateway adds it)."""
    frame = Call(mid, action, msgspec.Raw(_encoder.encode(payload)))
    return _encoder.encode(Envelope(charge_point_id=cp, message_type=2, message_id=mid,
                                    action=action, payload=frame, timestamp=timestamp,
                                    protocol=protocol))  # fmt: skip


def receipt_time() -> str:
    """The ws-server's receipt stamp, as it writes it."""
    return clock.wire(datetime.now(UTC))


class _StartReply(msgspec.Struct):
    payload: tuple[Literal[3], str, m.StartTransactionResponse]


_start_reply: Final = msgspec.json.Decoder(_StartReply)


class _Reply(msgspec.Struct):
    charge_point_id: str
    message_id: str
    payload: tuple[Literal[3], str, msgspec.Raw]


_reply: Final = msgspec.json.Decoder(_Reply)
_responses: Final[dict[tuple[str | None, str], msgspec.json.Decoder[Any]]] = {}


def _response(protocol: str | None, action: str) -> msgspec.json.Decoder[Any]:
    """The decoder of ``action``'s response Struct in ``protocol`` (None: 1.6)."""
    decoder = _responses.get((protocol, action))
    if decoder is None:
        struct = (v201.RESPONSES[action] if protocol == OCPP201
                  else getattr(m, f"{action}Response"))  # fmt: skip
        decoder = _responses[protocol, action] = msgspec.json.Decoder(struct)
    return decoder


def _wrong(p: Planned, body: Any) -> str | None:
    """What is wrong with a valid response for this message in particular."""
    if p.action == "StartTransaction":
        expected = p.session.transaction_id if p.session is not None else None
        if body.transaction_id != expected:
            return f"transactionId {body.transaction_id}, its opening got {expected}"
    elif (
        isinstance(p.payload, v201.TransactionEvent)
        and p.payload.id_token is not None
        and body.id_token_info is None
    ):
        # "Required when the transactionEventRequest contained an idToken."
        return "no idTokenInfo for the event's idToken"
    return None


def check_replies(phase: Phase, replies: Sequence[bytes | None]) -> list[str]:
    """What is wrong with a phase's replies (one per message, in message
    order): each must be a CALLRESULT to its message whose payload is valid
    against the action's response Struct in the phase's OCPP version, a
    StartTransaction's must carry the transactionId its opening got and a
    2.0.1 TransactionEvent's naming an idToken its idTokenInfo. Empty when
    all are right."""
    problems = []
    for i, (p, raw) in enumerate(zip(phase.messages, replies, strict=True)):
        mid = f"{phase.name}{i}"
        if raw is None:
            problems.append(f"{mid} ({p.label}): no reply")
            continue
        try:
            reply = _reply.decode(raw)
            if reply.message_id != mid or reply.payload[1] != mid:
                raise ValueError(f"answers {reply.message_id!r}")
            body = _response(phase.protocol, p.action).decode(reply.payload[2])
        except (msgspec.DecodeError, ValueError) as exc:
            problems.append(f"{mid} ({p.label}): {exc}: {raw[:300]!r}")
            continue
        wrong = _wrong(p, body)
        if wrong is not None:
            problems.append(f"{mid} ({p.label}): {wrong}")
    return problems
