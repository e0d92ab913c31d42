"""What the console's pages show, shaped from what the queries read: pure
functions and Structs, no I/O, so every rule here is unit-tested without a
server. Times come in as the processor stores them (RFC 3339 text in UTC)
and ``now`` is always passed in, never read from the clock here.

The Jinja filters the templates use (``ago``, ``kwh``, ``duration``, ...) are
the small formatting functions at the end; :data:`FILTERS` names them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlencode

import msgspec

from adapters.api_models import ChargePointSummary, MeterValue
from processor import clock
from processor.protocol_names import OCPP16, OCPP201
from processor.v201.device_model import Attribute

# A charger is online while it was heard from within this: two heartbeats
# at the processor's default interval (300 s) and a minute of slack. Nothing
# in Redis says whether its WebSocket is open (that is the ws-server's), so
# presence is read from last_seen, which every message it sends refreshes.
# The default of the console's own setting (``mount.console``).
OFFLINE_AFTER_S = 2 * 300 + 60

# The threshold of the console serving this request: its mount sets it
# before each request (``mount.py``), so the rows ``queries.py`` builds
# judge presence by the console's setting without every read passing it on.
offline_after: ContextVar[float] = ContextVar("offline_after_s", default=OFFLINE_AFTER_S)

Presence = Literal["online", "offline", "never"]
PRESENCE_LABELS: dict[str, str] = {
    "online": "Online",
    "offline": "Offline",
    "never": "Never booted",
}
PROTOCOL_LABELS = {OCPP16: "OCPP 1.6", OCPP201: "OCPP 2.0.1"}
# "Last seen" filter choices: (value, label, seconds; negative: older than).
SEEN_WINDOWS: tuple[tuple[str, str, int], ...] = (
    ("5m", "in the last 5 minutes", 300),
    ("1h", "in the last hour", 3600),
    ("24h", "in the last 24 hours", 86400),
    ("old", "more than 24 hours ago", -86400),
)


def presence(
    last_boot: str | None,
    last_seen: str | None,
    now: datetime,
    offline_after_s: float | None = None,
) -> Presence:
    """Online, offline, or never booted (on the allow-list, or heard from
    without a BootNotification that was accepted). Online means heard from
    within ``offline_after_s``; by default this request's console's threshold."""
    if not last_boot:
        return "never"
    limit = offline_after.get() if offline_after_s is None else offline_after_s
    seen = clock.parse(last_seen)
    if seen is None or (now - seen).total_seconds() > limit:
        return "offline"
    return "online"


def online_legend(offline_after_s: float) -> str:
    """What "online" means, for a page's legend: ``heard from in the last 11 min``."""
    seconds = round(offline_after_s)
    window = f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"
    return f"heard from in the last {window}"


# --- connectors ----------------------------------------------------------------

# Status words of both versions, grouped for colour; the text is always
# shown beside the colour. 1.6: ChargePointStatus; 2.0.1: ConnectorStatusEnumType.
_TONES = {
    "Available": "ok",
    "Preparing": "busy",
    "Charging": "busy",
    "Occupied": "busy",
    "SuspendedEV": "warn",
    "SuspendedEVSE": "warn",
    "Finishing": "busy",
    "Reserved": "warn",
    "Unavailable": "off",
    "Faulted": "bad",
}


def tone(status: str | None) -> str:
    """The colour class of a status (``ok``, ``busy``, ``warn``, ``bad``,
    ``off``); ``off`` for one not known."""
    return _TONES.get(status or "", "off")


class ConnectorRow(msgspec.Struct, frozen=True, kw_only=True):
    """A connector as the charger page lists it. For 2.0.1, ``evse_id`` is
    set and ``connector_id`` counts within the EVSE."""

    evse_id: int | None = None
    connector_id: int
    status: str | None = None
    error_code: str | None = None
    info: str | None = None
    since: str | None = None
    transaction_id: int | None = None

    @property
    def label(self) -> str:
        if self.evse_id is not None:
            return f"EVSE {self.evse_id} / {self.connector_id}"
        return "Charger" if self.connector_id == 0 else f"Connector {self.connector_id}"


def count_statuses(statuses: Iterable[str | None]) -> list[tuple[str, int]]:
    """How many connectors are in each status, most first; unreported as "Unknown"."""
    counts: dict[str, int] = {}
    for status in statuses:
        name = status or "Unknown"
        counts[name] = counts.get(name, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def merge_counts(counts: Iterable[Iterable[tuple[str, int]]]) -> list[tuple[str, int]]:
    """Per-charger status counts added up, most first."""
    total: dict[str, int] = {}
    for each in counts:
        for status, n in each:
            total[status] = total.get(status, 0) + n
    return sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))


# --- the charger list ----------------------------------------------------------


class ChargerRow(msgspec.Struct, frozen=True, kw_only=True):
    charge_point_id: str
    protocol: str | None = None
    vendor: str | None = None
    model: str | None = None
    firmware: str | None = None
    registration_status: str | None = None
    last_seen: str | None = None
    presence: Presence
    connectors: list[tuple[str, int]] = []


class ChargerFilter(msgspec.Struct, frozen=True, kw_only=True):
    """The charger list's filters; empty means any."""

    q: str = ""
    presence: str = ""
    protocol: str = ""
    seen: str = ""

    @property
    def active(self) -> bool:
        return bool(self.q or self.presence or self.protocol or self.seen)

    def query(self) -> str:
        """These filters as a query string, empty ones left out."""
        return urlencode({k: val for k, val in msgspec.structs.asdict(self).items() if val})


def charger_row(
    summary: ChargePointSummary,
    protocol: str | None,
    firmware: str | None,
    statuses: Sequence[str | None],
    now: datetime,
) -> ChargerRow:
    return ChargerRow(
        charge_point_id=summary.charge_point_id, protocol=protocol,
        vendor=summary.charge_point_vendor, model=summary.charge_point_model, firmware=firmware,
        registration_status=summary.registration_status, last_seen=summary.last_seen,
        presence=presence(summary.last_boot, summary.last_seen, now),
        connectors=count_statuses(statuses),
    )  # fmt: skip


def _seen_within(row: ChargerRow, window: str, now: datetime) -> bool:
    seconds = next((s for v, _, s in SEEN_WINDOWS if v == window), None)
    if seconds is None:
        return True
    seen = clock.parse(row.last_seen)
    if seen is None:
        return seconds < 0
    age = (now - seen).total_seconds()
    return age <= seconds if seconds > 0 else age > -seconds


# The charger list shows at most this many rows: it re-renders every 3 s,
# and a fleet of thousands would make each poll a page of megabytes. The
# filters still search the whole fleet.
CHARGERS_SHOWN = 200


class ChargerPage(msgspec.Struct, frozen=True, kw_only=True):
    """The rows the list shows, how many matched the filters, how many there are."""

    rows: list[ChargerRow]
    matched: int
    total: int

    @property
    def capped(self) -> bool:
        return self.matched > len(self.rows)


def charger_page(
    every: Sequence[ChargerRow], f: ChargerFilter, now: datetime, limit: int = CHARGERS_SHOWN
) -> ChargerPage:
    """``every`` filtered by ``f``, the first ``limit`` of them kept (in
    the order given)."""
    found = filter_chargers(every, f, now)
    return ChargerPage(rows=found[:limit], matched=len(found), total=len(every))


def filter_chargers(
    rows: Iterable[ChargerRow], f: ChargerFilter, now: datetime
) -> list[ChargerRow]:
    """The rows ``f`` lets through: ``q`` a case-blind substring of the id,
    vendor, model or firmware; the rest exact choices."""
    needle = f.q.strip().casefold()
    found = []
    for row in rows:
        text = " ".join(x for x in (row.charge_point_id, row.vendor, row.model, row.firmware) if x)
        if needle and needle not in text.casefold():
            continue
        if f.presence and row.presence != f.presence:
            continue
        if f.protocol and (row.protocol or OCPP16) != f.protocol:
            continue
        if f.seen and not _seen_within(row, f.seen, now):
            continue
        found.append(row)
    return found


# --- the overview --------------------------------------------------------------


class GroupInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A consumer group on a stream: what its readers hold and have not read."""

    stream: str
    group: str
    pending: int | None = None
    lag: int | None = None


class Overview(msgspec.Struct, kw_only=True):
    """The overview's figures; None where the source did not answer
    (``history_error`` says why for the PostgreSQL ones)."""

    online: int = 0
    offline: int = 0
    never_booted: int = 0
    connectors: list[tuple[str, int]] = []
    active_v16: int = 0
    active_v201: int | None = None
    energy_today_wh: int | None = None
    history_error: str | None = None
    messages_per_s: float | None = None
    groups: list[GroupInfo] = []
    dead_last_hour: int = 0
    anomalies_last_hour: int = 0
    commands_in_flight: int = 0
    more: int = 0  # the cap the last-hour counts stop at


class RateMeter:
    """Messages per second from a counter that only grows (the inbound
    stream's ``entries-added``), sampled whenever the overview is read: the
    rate over the samples of the last ``window_s`` seconds. Shared by every
    viewer of one process, so more viewers give more samples, not more reads."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._samples: list[tuple[float, int]] = []

    def add(self, at: float, count: int) -> float | None:
        """Record ``count`` at ``at`` (seconds, monotonic); the rate, or
        None until two samples are at least a second apart."""
        if self._samples and count < self._samples[-1][1]:
            self._samples.clear()  # the stream was deleted and recreated
        self._samples.append((at, count))
        while len(self._samples) > 2 and at - self._samples[1][0] >= self.window_s:
            self._samples.pop(0)
        first_at, first = self._samples[0]
        if at - first_at < 1.0:
            return None
        return (count - first) / (at - first_at)


# --- the device model and configuration -----------------------------------------


class VariableRow(msgspec.Struct, frozen=True, kw_only=True):
    """One attribute of a 2.0.1 station's device model."""

    component: str
    evse: str = ""
    variable: str
    attribute: str
    value: str
    mutability: str | None = None
    unit: str | None = None


class _Meta(msgspec.Struct, frozen=True):
    mutability: str | None = None
    characteristics: dict[str, Any] | None = None


def _named(name: str, instance: str) -> str:
    return f"{name} ({instance})" if instance else name


def variable_rows(values: dict[str, str], meta: dict[str, str]) -> list[VariableRow]:
    """The device model's current values, sorted by component, EVSE and
    variable; fields that do not decode are skipped (not the processor's)."""
    rows = []
    for field, value in values.items():
        try:
            a = msgspec.json.decode(field, type=Attribute)
        except msgspec.DecodeError:
            continue
        try:
            m = msgspec.json.decode(meta.get(field, "{}"), type=_Meta)
        except msgspec.DecodeError:
            m = _Meta()
        unit = (m.characteristics or {}).get("unit")
        evse = "" if a.evse_id is None else str(a.evse_id)
        if evse and a.connector_id is not None:
            evse += f"/{a.connector_id}"
        rows.append(
            VariableRow(
                component=_named(a.component, a.component_instance),
                evse=evse,
                variable=_named(a.variable, a.variable_instance),
                attribute=a.attribute_type,
                value=value,
                mutability=m.mutability,
                unit=unit if isinstance(unit, str) else None,
            )  # fmt: skip
        )
    return sorted(rows, key=lambda r: (r.component, r.evse, r.variable, r.attribute))


# --- OCPP frames -----------------------------------------------------------------


def frame_action(text: str) -> str:
    """What an OCPP-J frame is: its CALL's action, CALLRESULT or CALLERROR."""
    try:
        parts = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return "?"
    if not isinstance(parts, list) or not parts:
        return "?"
    kinds = {2: parts[2] if len(parts) > 2 else "CALL", 3: "CALLRESULT", 4: "CALLERROR"}
    return str(kinds.get(parts[0], "?"))


# --- transactions ------------------------------------------------------------------

_ENERGY = "Energy.Active.Import.Register"
_POWER = "Power.Active.Import"
_SIGNED = "SignedData"


class ChartData(msgspec.Struct, frozen=True, kw_only=True):
    """A transaction's curve for uPlot: epoch seconds, energy delivered
    since its start (kWh: the register less the transaction's meter start,
    or less its first reading when the start is not known), power (kW;
    derived from the energy readings when the charger sent none). Series
    are aligned on ``t``; null where a reading has no such value."""

    t: list[float]
    energy_kwh: list[float | None]
    power_kw: list[float | None]
    power_derived: bool = False
    # Whether energy counts from the meter start (else from the first reading).
    from_meter_start: bool = False

    @property
    def points(self) -> int:
        return len(self.t)

    @property
    def delivered_kwh(self) -> float | None:
        """Energy by the last reading: what a running transaction has so far."""
        return next((e for e in reversed(self.energy_kwh) if e is not None), None)


def _scaled(value: str, unit: str | None, base: str) -> float | None:
    """``value`` in k``base`` (kWh, kW), from ``base`` or k``base``; None for
    a value that is not a number or a unit we do not read."""
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    if unit in (None, base):
        return number / 1000
    if unit == "k" + base:
        return number
    return None


def chart_data(values: Sequence[MeterValue], meter_start_wh: int | None = None) -> ChartData:
    """Energy and power per reading time, from the readings with no phase
    (the totals). Energy defaults to the register, Wh, as OCPP says when
    measurand and unit are left out. Energy counts from ``meter_start_wh``
    (1.6's meterStart, 2.0.1's Transaction.Begin register) when known: the
    first reading may come minutes into the transaction, so counting from
    it would leave out what was delivered before."""
    energy: dict[float, float] = {}
    power: dict[float, float] = {}
    for v in values:
        if v.phase or v.format == _SIGNED:
            continue
        at = clock.parse(v.sampled_at)
        if at is None:
            continue
        t = at.timestamp()
        measurand = v.measurand or _ENERGY
        if measurand == _ENERGY and (kwh := _scaled(v.value, v.unit, "Wh")) is not None:
            energy[t] = kwh
        elif measurand == _POWER and (kw := _scaled(v.value, v.unit, "W")) is not None:
            power[t] = kw
    times = sorted(energy.keys() | power.keys())
    start = _energy_base(energy, meter_start_wh)
    derived = not power and len(energy) > 1
    if derived:
        ordered = sorted(energy.items())
        for (t0, e0), (t1, e1) in zip(ordered, ordered[1:], strict=False):
            if t1 > t0:
                power[t1] = max(0.0, (e1 - e0) * 3600 / (t1 - t0))
    return ChartData(
        t=times,
        energy_kwh=[round(energy[t] - start, 4) if t in energy else None for t in times],
        power_kw=[round(power[t], 3) if t in power else None for t in times],
        power_derived=derived,
        from_meter_start=meter_start_wh is not None,
    )


def _energy_base(energy: dict[float, float], meter_start_wh: int | None) -> float:
    """The register (kWh) energy counts from: the meter start, else the first reading."""
    if meter_start_wh is not None:
        return meter_start_wh / 1000
    return energy[min(energy)] if energy else 0.0


def signed_values(values: Sequence[MeterValue]) -> list[MeterValue]:
    """The readings sent as signed data (OCMF and the like), for an auditor:
    1.6's in the value (format SignedData), 2.0.1's beside it."""
    return [v for v in values if v.format == _SIGNED or v.signed_meter_value is not None]


# --- formatting: the templates' filters ---------------------------------------------


def ago(text: str | None, now: datetime) -> str:
    """ "12 s ago", "3 min ago", "5 h ago", "2 d ago"; "never" for none;
    "in 4 s" for a time ahead (a charger's clock)."""
    at = clock.parse(text)
    if at is None:
        return "never"
    seconds = (now - at).total_seconds()
    ahead = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        span = f"{seconds:.0f} s"
    elif seconds < 3600:
        span = f"{seconds // 60:.0f} min"
    elif seconds < 86400:
        span = f"{seconds // 3600:.0f} h"
    else:
        span = f"{seconds // 86400:.0f} d"
    return f"in {span}" if ahead else f"{span} ago"


def when(text: str | None) -> str:
    """A stored time as an operator reads it: ``2024-01-01 12:00:05 UTC``."""
    at = clock.parse(text)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else "—"


def kwh(wh: int | None) -> str:
    """Watt-hours as kWh, three decimals, exact: ``12.345 kWh``."""
    if wh is None:
        return "—"
    return f"{Decimal(wh).scaleb(-3):.3f} kWh"


def duration(start: str | None, stop: str | None, now: datetime | None = None) -> str:
    """``1 h 05 min``, ``4 min 10 s``; running (no stop) measured to ``now``."""
    began = clock.parse(start)
    ended = clock.parse(stop) or now
    if began is None or ended is None:
        return "—"
    return span(ended - began)


def span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "—"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def protocol_label(protocol: str | None) -> str:
    return PROTOCOL_LABELS.get(protocol or OCPP16, protocol or "OCPP 1.6")


def epoch_text(at: float) -> str:
    """Epoch seconds as stored text, for :func:`ago` and :func:`when`."""
    return clock.stored(datetime.fromtimestamp(at, UTC))


def dom_id(text: str) -> str:
    """``text`` (a charger's id, any characters) as the tail of an HTML id,
    one to one: letters, digits and ``-`` kept, every other character as
    ``_<hex>_``. htmx gives the focus back after a swap only to an element
    whose id the new markup has again, so ids in polled fragments must
    come from what they show, not from their position."""
    return "".join(c if c.isascii() and (c.isalnum() or c == "-") else f"_{ord(c):x}_"
                   for c in text)  # fmt: skip


def stream_time(entry_id: str) -> str:
    """A stream entry's time (its id's milliseconds) as stored text."""
    ms = entry_id.partition("-")[0]
    return epoch_text(int(ms) / 1000) if ms.isdigit() else ""


FILTERS: dict[str, Callable[..., Any]] = {
    "ago": ago,
    "when": when,
    "kwh": kwh,
    "duration": duration,
    "tone": tone,
    "protocol_label": protocol_label,
    "epoch_text": epoch_text,
    "stream_time": stream_time,
    "frame_action": frame_action,
    "dom_id": dom_id,
}


# --- the transaction list's filters --------------------------------------------------


class TransactionFilter(msgspec.Struct, frozen=True, kw_only=True):
    """The transaction list's filters as the form sends them: days as
    ``YYYY-MM-DD`` (UTC), ``state`` ``active``, ``finished`` or empty,
    ``protocol`` empty (1.6) or ``ocpp2.0.1``."""

    charge_point_id: str = ""
    id_tag: str = ""
    state: str = ""
    start_day: str = ""
    end_day: str = ""
    # OCPP 1.6 transactions (empty) or 2.0.1 sessions: listed apart, their
    # ids being ours and numeric in one, the station's text in the other.
    protocol: str = ""

    @property
    def v201(self) -> bool:
        return self.protocol == OCPP201

    @property
    def active(self) -> bool | None:
        return {"active": True, "finished": False}.get(self.state)

    @property
    def started_from(self) -> datetime | None:
        return _day(self.start_day)

    @property
    def started_to(self) -> datetime | None:
        """Exclusive: the day after ``end_day``, so that day is included."""
        end = _day(self.end_day)
        return end + timedelta(days=1) if end is not None else None

    def query(self, **more: str | int | None) -> str:
        """These filters (and ``more``) as a query string, empty ones left out."""
        pairs = {**msgspec.structs.asdict(self), **more}
        return urlencode({k: val for k, val in pairs.items() if val not in ("", None)})


# Days the filters take: no transaction is older or newer, and a day near
# datetime's ends would overflow the day added to make ``started_to``.
FIRST_YEAR, LAST_YEAR = 2000, 2999


def _day(text: str) -> datetime | None:
    """``YYYY-MM-DD`` (years :data:`FIRST_YEAR` to :data:`LAST_YEAR`) as
    midnight UTC; ValueError for anything else."""
    if not text:
        return None
    day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise ValueError(f"{text} is not between {FIRST_YEAR} and {LAST_YEAR}")
    return day
