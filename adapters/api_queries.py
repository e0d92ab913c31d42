"""The reads and writes behind the HTTP API and ``ocpp-cli``: what the
processor keeps in Redis (``docs/state.md``), turned into the Structs of
``adapters/api_models.py``, and commands sent through the CommandQueue.
History (transactions, meter values, events, past commands) is read from
PostgreSQL by ``adapters/api_history.py``.

Both front ends call these and only map the two exceptions below to their
own way of failing (404 / 400 problems, exit codes 1 / 2).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from adapters.api_models import (
    ChargePoint,
    ChargePointList,
    ChargePointSummary,
    Command,
    ConfigurationKey,
    Connector,
    Frame,
    FrameList,
    IdTag,
    IdTagBody,
    LateReply,
    TransactionDetail,
)
from processor import clock, frames, keys
from processor.command_queue import CommandQueue
from processor.commands import TERMINAL, CommandRecord, CommandRejected, validate_request
from processor.protocol_names import OCPP16

MAX_LIMIT = 1000
MAX_WAIT_S = 60.0
MAX_TIMEOUT_S = 3600.0
# A request body, from the API or the CLI; OCPP payloads are small (the
# processor refuses envelopes over 64 KiB by default).
MAX_BODY_BYTES = 1 << 20
_BOOT_FIELDS = frozenset(f.name for f in msgspec.structs.fields(ChargePoint)) - {
    "charge_point_id",
    "attributes",
    "connectors",
    "configuration",
}


class NotFound(LookupError):
    """The charger, command, transaction or idTag asked for does not exist."""


class InvalidInput(ValueError):
    """The request is wrong; the message says how."""


def _s(value: bytes | str) -> str:
    # The client has decode_responses off: redis-py's bytes | str is bytes.
    return value.decode() if isinstance(value, bytes) else value


def text_fields(fields: Mapping[bytes, bytes]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in fields.items()}


def int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _json(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return msgspec.json.decode(value)
    except msgspec.DecodeError:
        return value


def _opt(value: str | None) -> str | None:
    """Absent and empty (a cleared text) both read as null."""
    return value or None


# --- commands ----------------------------------------------------------------


def command_view(record: CommandRecord) -> Command:
    f = record.fields
    late = None
    if "late_at_ms" in f:
        late = LateReply(at_ms=int_or_none(f["late_at_ms"]), state=f.get("late_state"),
                         result=_json(f.get("late_result")), status=f.get("late_status"),
                         error_code=f.get("late_error_code"),
                         error_description=f.get("late_error_description"))  # fmt: skip
    return Command(
        command_id=record.command_id,
        charge_point_id=record.charge_point_id,
        action=record.action,
        state=record.state,  # type: ignore[arg-type]
        request=_json(f.get("request")),
        result=_json(f.get("result")),
        status=f.get("status"),
        error_code=f.get("error_code"),
        error_description=f.get("error_description"),
        timeout_ms=int_or_none(f.get("timeout_ms")),
        created_at_ms=int_or_none(f.get("created_at_ms")),
        sent_at_ms=int_or_none(f.get("sent_at_ms")),
        completed_at_ms=int_or_none(f.get("completed_at_ms")),
        round_trip_ms=int_or_none(f.get("round_trip_ms")),
        late_reply=late,
    )


def is_finished(command: Command) -> bool:
    return command.state in TERMINAL


async def send_command(
    redis: Redis,
    queue: CommandQueue,
    charge_point_id: str,
    action: str,
    body: bytes,
    *,
    timeout_s: float = 30.0,
    wait_s: float = 0.0,
    traceparent: str = "",
) -> Command:
    """Send ``action`` with the JSON ``body`` (empty means ``{}``) to the
    charger and, if ``wait_s`` > 0, wait up to that long for its outcome."""
    if not 0 <= wait_s <= MAX_WAIT_S:
        raise InvalidInput(f"wait must be between 0 and {MAX_WAIT_S:g} seconds, got {wait_s:g}")
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise InvalidInput(
            f"timeout must be above 0 and at most {MAX_TIMEOUT_S:g} seconds, got {timeout_s:g}"
        )
    body = body if body.strip() else b"{}"
    if not await charge_point_exists(redis, charge_point_id):
        raise NotFound(f"charge point {charge_point_id!r} is not known")
    protocol = await charger_protocol(redis, charge_point_id, queue.default_protocol)
    try:
        validate_request(action, body, protocol)
        record = await queue.send(
            charge_point_id, action, body, timeout_s=timeout_s, traceparent=traceparent,
            protocol=protocol,
        )  # fmt: skip
    except CommandRejected as exc:
        raise InvalidInput(str(exc)) from None
    if wait_s > 0:
        record = await wait_for_outcome(queue, record, wait_s)
    else:  # as stored: send's copy lacks what the script added (sent_at_ms)
        record = await queue.get(record.command_id) or record
    return command_view(record)


# redis-py (8+) gives every read a 5 s socket timeout by default, and a
# blocking BLPOP longer than that fails with TimeoutError: wait in slices.
WAIT_SLICE_S = 4.0


async def wait_for_outcome(
    queue: CommandQueue, record: CommandRecord, wait_s: float
) -> CommandRecord:
    """``record`` once it has an outcome, or as it is after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    record = await queue.get(record.command_id) or record
    while record.state not in TERMINAL:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        record = await queue.wait(record.command_id, min(left, WAIT_SLICE_S)) or record
    return record


# --- charge points -------------------------------------------------------------


async def charger_protocol(redis: Redis, charge_point_id: str, default: str = OCPP16) -> str:
    """The OCPP version the charger booted with; ``default``
    (``OCPP_DEFAULT_PROTOCOL``) for one that has not said (on the
    allow-list but never booted, or booted before versions were recorded)."""
    protocol: bytes | str | None = await redis.hget(keys.charge_point(charge_point_id), "protocol")
    if isinstance(protocol, bytes):
        protocol = protocol.decode()
    return protocol or default


async def charger_frames(redis: Redis, charge_point_id: str) -> FrameList:
    """The charger's last frames, newest first; from now on, for
    :data:`processor.frames.WATCH_S`, all of its frames are recorded (those
    of our commands always are)."""
    if not await charge_point_exists(redis, charge_point_id):
        raise NotFound(f"charge point {charge_point_id!r} is not known")
    now_ms = int(time.time() * 1000)
    until_ms = now_ms + frames.WATCH_S * 1000
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(keys.FRAMES_WATCHED, {charge_point_id: until_ms})
        pipe.zremrangebyscore(keys.FRAMES_WATCHED, "-inf", now_ms)
        pipe.lrange(keys.frames(charge_point_id), 0, keys.FRAMES_KEPT - 1)
        *_, raw = await pipe.execute()
    shown = []
    for item in raw:
        try:
            e = _frame_entry.decode(item)
        except msgspec.DecodeError:
            continue  # not ours: left out rather than failing the page
        at = datetime.fromtimestamp(e.at / 1000, UTC)
        shown.append(Frame(at=clock.stored(at), direction=e.dir, frame=e.frame))
    watched = clock.stored(datetime.fromtimestamp(until_ms / 1000, UTC))
    return FrameList(charge_point_id=charge_point_id, watched_until=watched, frames=shown)


_frame_entry = msgspec.json.Decoder(frames.Entry)


async def charge_point_exists(redis: Redis, charge_point_id: str) -> bool:
    """Booted, on the allow-list, or at least heard from."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.sismember(keys.CHARGE_POINTS, charge_point_id)
        pipe.sismember(keys.KNOWN_CHARGE_POINTS, charge_point_id)
        pipe.exists(keys.charge_point(charge_point_id))
        found: list[Any] = await pipe.execute()
    return any(found)


async def list_charge_points(redis: Redis) -> ChargePointList:
    ids = sorted(_s(m) for m in await redis.smembers(keys.CHARGE_POINTS))
    names = ["charge_point_vendor", "charge_point_model", "registration_status", "last_boot",
             "last_seen"]  # fmt: skip
    async with redis.pipeline(transaction=False) as pipe:
        for cp in ids:
            pipe.hmget(keys.charge_point(cp), names)
        rows: list[list[bytes | None]] = await pipe.execute()
    return ChargePointList(
        charge_points=[
            ChargePointSummary(
                charge_point_id=cp,
                **{
                    n: v.decode() if v is not None else None
                    for n, v in zip(names, row, strict=True)
                },
            )
            for cp, row in zip(ids, rows, strict=True)
        ]
    )


def _configuration_key(name: str, raw: str) -> ConfigurationKey:
    try:
        return msgspec.json.decode(raw, type=ConfigurationKey)
    except msgspec.DecodeError:  # an entry not written by the processor
        return ConfigurationKey(key=name, value=raw)


async def get_charge_point(redis: Redis, charge_point_id: str) -> ChargePoint:
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.charge_point(charge_point_id))
        pipe.smembers(keys.connectors(charge_point_id))
        pipe.hgetall(keys.configuration(charge_point_id))
        pipe.sismember(keys.CHARGE_POINTS, charge_point_id)
        raw_info, raw_connectors, raw_config, booted = await pipe.execute()
    info = text_fields(raw_info)
    if not info and not booted:
        raise NotFound(f"charge point {charge_point_id!r} is not known")
    numbers = (int_or_none(c.decode()) for c in raw_connectors)
    connector_ids = sorted(n for n in numbers if n is not None)
    async with redis.pipeline(transaction=False) as pipe:
        for n in connector_ids:
            pipe.hgetall(keys.connector(charge_point_id, n))
        hashes: list[dict[bytes, bytes]] = await pipe.execute()
    connectors = []
    for n, raw in zip(connector_ids, hashes, strict=True):
        c = text_fields(raw)
        connectors.append(
            Connector(
                connector_id=n,
                status=_opt(c.get("status")),
                error_code=_opt(c.get("error_code")),
                info=_opt(c.get("info")),
                vendor_id=_opt(c.get("vendor_id")),
                vendor_error_code=_opt(c.get("vendor_error_code")),
                status_timestamp=_opt(c.get("status_timestamp")),
                transaction_id=int_or_none(c.get("transaction_id")),
            )  # fmt: skip
        )
    config = text_fields(raw_config)
    return ChargePoint(
        charge_point_id=charge_point_id,
        **{name: info[name] for name in _BOOT_FIELDS if name in info},
        attributes={k: v for k, v in info.items() if k not in _BOOT_FIELDS},
        connectors=connectors,
        configuration=[_configuration_key(k, config[k]) for k in sorted(config)]
        if config
        else None,
    )


# --- transactions ------------------------------------------------------------


def _transaction(transaction_id: int, t: dict[str, str], active: bool) -> dict[str, Any]:
    return {
        "transaction_id": transaction_id,
        "charge_point_id": t.get("charge_point_id"),
        "connector_id": int_or_none(t.get("connector_id")),
        "id_tag": t.get("id_tag"),
        "active": active,
        "meter_start": int_or_none(t.get("meter_start")),
        "start_timestamp": t.get("start_timestamp"),
        "reservation_id": int_or_none(t.get("reservation_id")),
        "id_tag_status": t.get("id_tag_status"),
        "meter_stop": int_or_none(t.get("meter_stop")),
        "stop_timestamp": t.get("stop_timestamp"),
        "stop_reason": t.get("stop_reason"),
        "stop_id_tag": t.get("stop_id_tag"),
        "energy_wh": int_or_none(t.get("energy_wh")),
    }


async def live_transaction(redis: Redis, transaction_id: int) -> TransactionDetail | None:
    """The transaction as Redis holds it (its ``ocpp:txn:{id}`` hash), with
    no meter values: those are in the history; None if Redis has no such
    transaction (never had, or dropped it after it closed)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.transaction(transaction_id))
        pipe.sismember(keys.ACTIVE_TRANSACTIONS, str(transaction_id))
        raw, active = await pipe.execute()
    t = text_fields(raw)
    if not t:
        return None
    return TransactionDetail(**_transaction(transaction_id, t, bool(active)), archived=False)


# --- id tags -----------------------------------------------------------------


def check_id_tag(tag: str) -> None:
    if not 1 <= len(tag) <= 20:
        raise InvalidInput(f"an idTag has 1 to 20 characters, {tag!r} has {len(tag)}")


def id_tag_body(status: str, expiry_date: str | None, parent_id_tag: str | None) -> IdTagBody:
    """The body ``PUT /v1/id-tags/{tag}`` takes, from loose values."""
    raw: dict[str, Any] = {"status": status}
    if expiry_date is not None:
        raw["expiry_date"] = expiry_date
    if parent_id_tag is not None:
        raw["parent_id_tag"] = parent_id_tag
    try:
        return msgspec.convert(raw, IdTagBody)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid idTag entry: {exc}") from None


async def get_id_tag(redis: Redis, tag: str) -> IdTag:
    check_id_tag(tag)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.id_tag(tag))
        pipe.get(keys.id_tag_active(tag))
        raw, active = await pipe.execute()
    fields = text_fields(raw)
    if "status" not in fields:
        raise NotFound(f"idTag {tag!r} is not in the authorization list")
    return IdTag(id_tag=tag, status=fields["status"], expiry_date=_opt(fields.get("expiry_date")),
                 parent_id_tag=_opt(fields.get("parent_id_tag")),
                 active_transaction_id=int_or_none(active.decode() if active else None),
                 )  # fmt: skip


async def put_id_tag(redis: Redis, tag: str, body: IdTagBody) -> tuple[IdTag, bool]:
    """Replace the tag's entry; returns it and whether it is new."""
    check_id_tag(tag)
    fields: dict[FieldT, EncodableT] = {"status": body.status}
    if body.expiry_date is not None:
        fields["expiry_date"] = clock.wire(body.expiry_date)
    if body.parent_id_tag is not None:
        fields["parent_id_tag"] = body.parent_id_tag
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.id_tag(tag))
        pipe.hset(keys.id_tag(tag), mapping=fields)
        existed, _ = await pipe.execute()
    return await get_id_tag(redis, tag), not existed


async def delete_id_tag(redis: Redis, tag: str) -> None:
    check_id_tag(tag)
    if not await redis.delete(keys.id_tag(tag)):
        raise NotFound(f"idTag {tag!r} is not in the authorization list")
