"""What the console reads: Redis (hot state, streams, commands) and, for
figures over time, PostgreSQL. Each read is a few pipelined round trips
whatever the fleet's size, and returns the Structs of ``views.py`` or of
``adapters/api_models.py``; what those mean is decided there, not here.

Reads that ``adapters/api_queries.py`` and ``adapters/api_history.py``
already make for the /v1 API are called, not repeated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from weakref import WeakKeyDictionary

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from adapters import api_queries as q
from adapters.api_models import (
    ChargePoint,
    ChargePointSummary,
    Frame,
)
from adapters.console import views as v
from adapters.history_db import History, HistoryUnavailable
from processor import keys
from processor.protocol_names import OCPP16, OCPP201

T = TypeVar("T")

# The overview counts dead letters and anomalies of the last hour up to this.
RECENT_CAP = 1000
# The authorization list page lists at most this many entries.
ID_TAGS_SHOWN = 5000
_SUMMARY = ("charge_point_vendor", "charge_point_model", "registration_status", "last_boot",
            "last_seen", "protocol", "firmware_version")  # fmt: skip


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {_s(k): _s(val) for k, val in raw.items()}


# --- chargers ------------------------------------------------------------------------


async def _connector_statuses(
    redis: Redis, ids: Sequence[str], protocols: Sequence[str | None]
) -> list[list[str | None]]:
    """Each charger's connector statuses (not the charger's own, connector
    or EVSE 0), in two round trips for the whole fleet."""
    async with redis.pipeline(transaction=False) as pipe:
        for cp, protocol in zip(ids, protocols, strict=True):
            if protocol == OCPP201:
                pipe.smembers(keys.evse_connectors(cp))
            else:
                pipe.smembers(keys.connectors(cp))
        members: list[set[bytes]] = await pipe.execute()
    wanted: list[list[str]] = []
    for cp, protocol, found in zip(ids, protocols, members, strict=True):
        names = sorted(_s(m) for m in found)
        if protocol == OCPP201:
            pairs = [n.split("/", 1) for n in names if "/" in n]
            wanted.append([keys.evse_connector(cp, int(e), int(c)) for e, c in pairs
                           if e.isdigit() and c.isdigit() and e != "0"])  # fmt: skip
        else:
            wanted.append([keys.connector(cp, int(n)) for n in names if n.isdigit() and n != "0"])
    async with redis.pipeline(transaction=False) as pipe:
        for names in wanted:
            for key in names:
                pipe.hget(key, "status")
        flat: list[bytes | None] = await pipe.execute()
    statuses, at = [], 0
    for names in wanted:
        statuses.append([_s(x) if x else None for x in flat[at : at + len(names)]])
        at += len(names)
    return statuses


class _Shared(Generic[T]):
    """A read of the whole fleet, one per Redis client, made at most every
    ``ttl`` seconds and shared by every open tab's poll and page view in
    this process: the overview and the charger list read every charger,
    and with thousands of them each read costs a noticeable share of a
    core. Concurrent callers wait for the one read in progress."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._held: WeakKeyDictionary[Redis, tuple[float, T]] = WeakKeyDictionary()
        self._locks: WeakKeyDictionary[Redis, asyncio.Lock] = WeakKeyDictionary()

    async def get(self, redis: Redis, read: Callable[[], Awaitable[T]]) -> T:
        async with self._locks.setdefault(redis, asyncio.Lock()):
            held = self._held.get(redis)
            if held is not None and time.monotonic() - held[0] < self._ttl:
                return held[1]
            value = await read()
            self._held[redis] = (time.monotonic(), value)
            return value


# As often as the overview polls: a second tab costs nothing more.
FLEET_TTL_S = 2.0
_rows: _Shared[list[v.ChargerRow]] = _Shared(FLEET_TTL_S)


async def charger_rows(redis: Redis, now: datetime) -> list[v.ChargerRow]:
    """Every charger that booted or is on the allow-list, by id; read at
    most every :data:`FLEET_TTL_S` (their presence as of that read)."""
    return await _rows.get(redis, lambda: _read_charger_rows(redis, now))


async def _read_charger_rows(redis: Redis, now: datetime) -> list[v.ChargerRow]:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.smembers(keys.CHARGE_POINTS)
        pipe.smembers(keys.KNOWN_CHARGE_POINTS)
        booted, known = await pipe.execute()
    ids = sorted({_s(m) for m in booted} | {_s(m) for m in known})
    async with redis.pipeline(transaction=False) as pipe:
        for cp in ids:
            pipe.hmget(keys.charge_point(cp), _SUMMARY)
        raw: list[list[bytes | None]] = await pipe.execute()
    fields = [dict(zip(_SUMMARY, (_s(x) if x else None for x in r), strict=True)) for r in raw]
    protocols = [f["protocol"] for f in fields]
    statuses = await _connector_statuses(redis, ids, protocols)
    return [
        v.charger_row(
            ChargePointSummary(
                charge_point_id=cp,
                charge_point_vendor=f["charge_point_vendor"],
                charge_point_model=f["charge_point_model"],
                registration_status=f["registration_status"],
                last_boot=f["last_boot"],
                last_seen=f["last_seen"],
            ),
            f["protocol"],
            f["firmware_version"],
            s,
            now,
        )  # fmt: skip
        for cp, f, s in zip(ids, fields, statuses, strict=True)
    ]


class ChargerDetail(msgspec.Struct, kw_only=True):
    """A charger page's data: the /v1 view of it, its protocol, its
    connectors (2.0.1: per EVSE) and its 2.0.1 device model."""

    charger: ChargePoint
    protocol: str
    connectors: list[v.ConnectorRow]
    variables: list[v.VariableRow] = []


async def charger_detail(
    redis: Redis, charge_point_id: str, default_protocol: str = OCPP16
) -> ChargerDetail:
    """Raises ``api_queries.NotFound`` for a charger never heard of; one
    that has registered no version speaks ``default_protocol``
    (``OCPP_DEFAULT_PROTOCOL``)."""
    charger = await q.get_charge_point(redis, charge_point_id)
    protocol = await q.charger_protocol(redis, charge_point_id, default_protocol)
    if protocol != OCPP201:
        rows = [
            v.ConnectorRow(connector_id=c.connector_id, status=c.status, error_code=c.error_code,
                           info=c.info, since=c.status_timestamp, transaction_id=c.transaction_id)
            for c in charger.connectors
        ]  # fmt: skip
        return ChargerDetail(charger=charger, protocol=protocol, connectors=rows)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.smembers(keys.evse_connectors(charge_point_id))
        pipe.hgetall(keys.variables(charge_point_id))
        pipe.hgetall(keys.variable_meta(charge_point_id))
        members, values, meta = await pipe.execute()
    pairs = sorted(
        (int(e), int(c))
        for e, _, c in (_s(m).partition("/") for m in members)
        if e.isdigit() and c.isdigit()
    )
    async with redis.pipeline(transaction=False) as pipe:
        for e, c in pairs:
            pipe.hgetall(keys.evse_connector(charge_point_id, e, c))
        hashes: list[dict[bytes, bytes]] = await pipe.execute()
    rows = []
    for (e, c), raw in zip(pairs, hashes, strict=True):
        f = _text(raw)
        rows.append(v.ConnectorRow(evse_id=e, connector_id=c, status=f.get("status"),
                                   since=f.get("status_timestamp")))  # fmt: skip
    return ChargerDetail(
        charger=charger, protocol=protocol, connectors=rows,
        variables=v.variable_rows(_text(values), _text(meta)),
    )  # fmt: skip


async def frames(redis: Redis, charge_point_id: str) -> list[Frame]:
    """The charger's last frames, newest first, as /v1 reads them: reading
    them keeps its frames recorded while the page is open."""
    try:
        return (await q.charger_frames(redis, charge_point_id)).frames
    except q.NotFound:
        return []


# --- the overview ----------------------------------------------------------------------


async def _groups(redis: Redis) -> list[v.GroupInfo]:
    found = []
    for stream in (keys.INBOUND, keys.HISTORY):
        try:
            groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
        except ResponseError:  # no such stream yet
            continue
        for g in groups:
            lag = g.get("lag")
            found.append(v.GroupInfo(stream=stream, group=_s(g["name"]),
                                     pending=int(g.get("pending") or 0),
                                     lag=int(lag) if lag is not None else None))  # fmt: skip
    return found


async def _entries_added(redis: Redis) -> int | None:
    """The inbound stream's all-time count (Redis 7.0+), None before."""
    try:
        info: dict[str, Any] = await redis.xinfo_stream(keys.INBOUND)
    except ResponseError:
        return None
    added = info.get("entries-added")
    return int(added) if added is not None else None


async def _recent(redis: Redis, stream: str, now_ms: int) -> int:
    """Entries of ``stream`` in the last hour, up to :data:`RECENT_CAP`."""
    since = f"{now_ms - 3_600_000}-0"
    entries = await redis.xrange(stream, min=since, max="+", count=RECENT_CAP)
    return len(entries or ())


# Energy of the sessions that ended since $1, both versions; 2.0.1 sessions
# open, started since $2 (a day ago): one whose Ended never came would
# otherwise count as running for ever. (Indexes: migration 0006.)
_TODAY = """SELECT
    (SELECT coalesce(sum(energy_wh), 0) FROM transactions WHERE stopped_at >= $1)
    + (SELECT coalesce(sum(energy_wh), 0) FROM transactions_v201 WHERE stopped_at >= $1)
        AS energy_wh,
    (SELECT count(*) FROM transactions_v201 WHERE stopped_at IS NULL AND started_at >= $2)
        AS open_v201"""


_overviews: _Shared[v.Overview] = _Shared(FLEET_TTL_S)


async def overview(redis: Redis, history: History, meter: v.RateMeter, now: datetime) -> v.Overview:
    """The fleet at a glance, read at most every :data:`FLEET_TTL_S`."""
    return await _overviews.get(redis, lambda: _read_overview(redis, history, meter, now))


async def _read_overview(
    redis: Redis, history: History, meter: v.RateMeter, now: datetime
) -> v.Overview:
    rows = await charger_rows(redis, now)
    now_ms = int(now.timestamp() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.scard(keys.ACTIVE_TRANSACTIONS)
        pipe.zcard(keys.COMMAND_DEADLINES)
        active, in_flight = await pipe.execute()
    added = await _entries_added(redis)
    out = v.Overview(
        online=sum(r.presence == "online" for r in rows),
        offline=sum(r.presence == "offline" for r in rows),
        never_booted=sum(r.presence == "never" for r in rows),
        connectors=v.merge_counts(r.connectors for r in rows),
        active_v16=int(active),
        messages_per_s=meter.add(time.monotonic(), added) if added is not None else None,
        groups=await _groups(redis),
        dead_last_hour=await _recent(redis, keys.DEAD, now_ms),
        anomalies_last_hour=await _recent(redis, keys.ANOMALIES, now_ms),
        commands_in_flight=int(in_flight),
        more=RECENT_CAP,
    )
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        found = await history.fetch(_TODAY, midnight, now - timedelta(days=1))
    except HistoryUnavailable as exc:
        out.history_error = str(exc)
    else:
        out.energy_today_wh = int(found[0]["energy_wh"])
        out.active_v201 = int(found[0]["open_v201"])
    return out


# --- dead letters and anomalies -----------------------------------------------------------


class StreamEntry(msgspec.Struct, frozen=True, kw_only=True):
    """An entry of ``ocpp:dead`` or ``ocpp:anomalies``: its id (and so its
    time), the reason or kind, the charger if known, the other fields."""

    entry_id: str
    reason: str
    charge_point_id: str | None = None
    fields: dict[str, str] = {}


def _charger_of(fields: dict[str, str]) -> str | None:
    if "charge_point_id" in fields:
        return fields["charge_point_id"]
    try:  # a dead letter: the envelope, if it decodes
        envelope = msgspec.json.decode(fields.get("envelope", ""))
    except msgspec.DecodeError:
        return None
    cp = envelope.get("charge_point_id") if isinstance(envelope, dict) else None
    return cp if isinstance(cp, str) else None


async def stream_page(
    redis: Redis, stream: str, reason_field: str, before: str | None, count: int = 50
) -> tuple[list[StreamEntry], str | None]:
    """A page of ``stream``, newest first, and the ``before`` of the next."""
    top = f"({before}" if before else "+"
    raw: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrevrange(  # type: ignore[assignment]
        stream, max=top, min="-", count=count + 1
    )
    entries = []
    for entry_id, raw_fields in raw[:count]:
        f = _text(raw_fields)
        entries.append(StreamEntry(
            entry_id=_s(entry_id), reason=f.pop(reason_field, "?"),
            charge_point_id=_charger_of(f), fields=f,
        ))  # fmt: skip
    more = entries[-1].entry_id if len(raw) > count else None
    return entries, more


# --- the authorization list ---------------------------------------------------------------


class IdTagRow(msgspec.Struct, frozen=True, kw_only=True):
    id_tag: str
    status: str
    expiry_date: str | None = None
    parent_id_tag: str | None = None


async def id_tags(redis: Redis, limit: int = ID_TAGS_SHOWN) -> tuple[list[IdTagRow], bool]:
    """The authorization list by tag, and whether it has more than ``limit``.
    Its entries are hashes (each tag's ``:active`` marker is a string)."""
    names: list[str] = []
    async for key in redis.scan_iter(match=f"{keys.ID_TAG_PREFIX}*", count=1000, _type="hash"):
        names.append(_s(key))
        if len(names) > limit:
            break
    names = sorted(names)[:limit]
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(name, ("status", "expiry_date", "parent_id_tag"))
        raw: list[list[bytes | None]] = await pipe.execute()
    rows = [
        IdTagRow(
            id_tag=name.removeprefix(keys.ID_TAG_PREFIX),
            status=_s(status),
            expiry_date=_s(expiry) if expiry else None,
            parent_id_tag=_s(parent) if parent else None,
        )  # fmt: skip
        for name, (status, expiry, parent) in zip(names, raw, strict=True)
        if status
    ]
    return rows, len(names) >= limit
