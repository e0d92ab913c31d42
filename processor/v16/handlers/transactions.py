"""Transactions and meter values.

A StartTransaction's transaction is opened by an idempotent reservation
(``processor/lua/open_transaction.lua``) keyed on its content, so a retry,
under the same or a new message id, gets the same transactionId. Everything
else is written at commit, and written so that the result does not depend
on the order redelivered or late messages are handled in: latest values and
statuses are newest-wins, a transaction is closed once and its first stop is
kept. Samples, starts and stops go to history (PostgreSQL, through the
archiver), appended once per message by the commit's XACK fence.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from processor import clock, history, keys
from processor.handler_common import (
    LATEST_NAMES,
    latest_name,
    refuse_unknown_under_known_only,
    trusted_time,
)
from processor.types import Context
from processor.v16.handlers.common import id_tag_info
from processor.v16.messages import (
    MeterValues,
    MeterValuesResponse,
    StartTransaction,
    StartTransactionResponse,
    StopTransaction,
    StopTransactionResponse,
)
from processor.v16.messages.metering import (
    MeterValue,
    SampledValue,
    TransactionMeterValue,
    TransactionSampledValue,
)

_values = msgspec.json.Encoder()


async def start_transaction(ctx: Context, req: StartTransaction) -> StartTransactionResponse:
    """Open the transaction (or find the one a retry opened) and answer for
    its idTag. Under ``known-only`` registration a charger not on the
    allow-list is refused with a SecurityError before anything is reserved:
    a Pending or Rejected boot alone does not stop a charger from sending
    StartTransaction, and an open transaction is what would be billed."""
    await refuse_unknown_under_known_only(ctx)
    started = trusted_time(ctx, req.timestamp, "StartTransaction")
    # Keyed on what the charger sent, not on the clamped time, so a retry
    # maps to the same transaction whatever our clock said in between.
    key = keys.transaction_idempotency(
        ctx.charge_point_id,
        req.connector_id,
        req.id_tag,
        req.meter_start,
        clock.stored(req.timestamp),
    )
    opened = await ctx.state.open_transaction(
        key,
        ctx.charge_point_id,
        req.connector_id,
        req.id_tag,
        req.meter_start,
        clock.stored(started),
        req.reservation_id,
    )
    info = id_tag_info(ctx, opened.id_tag, opened.concurrent_with, opened.transaction_id)
    # The charger has started charging whatever we answer; the record keeps
    # what it was told, so a refused start is visible as such.
    ctx.effects.hset(keys.transaction(opened.transaction_id), {"id_tag_status": info.status})
    ctx.effects.sadd(keys.connectors(ctx.charge_point_id), str(req.connector_id))
    # A retry under a new message id records the same start again: the
    # archiver keeps one row per (charger, transactionId).
    ctx.effects.record(
        history.TransactionStarted(
            ctx.charge_point_id, opened.transaction_id, req.connector_id, req.id_tag,
            req.reservation_id, clock.stored(started), req.meter_start, info.status,
        )
    )  # fmt: skip
    return StartTransactionResponse(id_tag_info=info, transaction_id=opened.transaction_id)


async def stop_transaction(ctx: Context, req: StopTransaction) -> StopTransactionResponse:
    """Close the transaction. Always accepted, even for one that is unknown or
    already closed: refusing would make the charger retry a stop it has
    already made. What is odd about it is recorded as an anomaly instead."""
    cp, tid = ctx.charge_point_id, req.transaction_id
    stopped = trusted_time(ctx, req.timestamp, "StopTransaction")
    record = await ctx.state.transaction(tid)
    stop = {"meter_stop": str(req.meter_stop), "stop_timestamp": clock.stored(stopped)}
    if req.reason is not None:
        stop["stop_reason"] = req.reason
    if req.id_tag is not None:
        stop["stop_id_tag"] = req.id_tag
    now = clock.stored(ctx.now)
    stopped_record = history.TransactionStopped(
        cp, tid, stop["stop_timestamp"], req.meter_stop, req.reason, req.id_tag
    )
    owner = record.get("charge_point_id") if record else None
    if owner is not None and owner != cp:
        # Another charger's transaction (ids are a counter: guessable):
        # closing it would let any charger end anyone's session. Recorded,
        # answered as any stop is, and nothing closed.
        ctx.effects.anomaly(cp, "StopTransaction for another charger's transaction", now,
                            message_id=ctx.message_id, transaction_id=tid, owner=owner,
                            **stop)  # fmt: skip
        return StopTransactionResponse()
    if record is None or "start_timestamp" not in record:
        # Unknown here: never seen, or closed and gone after the grace
        # period. The stop is still billed from history.
        ctx.effects.anomaly(cp, "StopTransaction for an unknown transaction", now,
                            message_id=ctx.message_id, transaction_id=tid, **stop)  # fmt: skip
        ctx.effects.record(stopped_record)
    elif "stop_timestamp" in record:
        if any(record.get(k) != v for k, v in stop.items()):
            ctx.effects.anomaly(cp, "StopTransaction for a closed transaction", now,
                                message_id=ctx.message_id, transaction_id=tid, **stop)  # fmt: skip
    else:
        _close(ctx, tid, record, stop, req.meter_stop, stopped)
        ctx.effects.record(stopped_record)
    if req.transaction_data:
        _store_samples(ctx, _connector_of(record), tid, req.transaction_data)
    info = None
    if req.id_tag is not None:
        tag, charging_in = await ctx.state.id_tag(req.id_tag)
        info = id_tag_info(ctx, tag, None if charging_in == tid else charging_in, tid)
    return StopTransactionResponse(id_tag_info=info)


def _close(
    ctx: Context,
    tid: int,
    record: dict[str, str],
    stop: dict[str, str],
    meter_stop: int,
    stopped: datetime,
) -> None:
    cp = ctx.charge_point_id
    now = clock.stored(ctx.now)
    meter_start = int(record.get("meter_start", "0"))
    if meter_stop < meter_start:
        ctx.effects.anomaly(cp, "meterStop below meterStart", now, transaction_id=tid,
                            meter_start=meter_start, meter_stop=meter_stop)  # fmt: skip
    if clock.stored(stopped) < record["start_timestamp"]:
        ctx.effects.anomaly(cp, "stop before start", now, transaction_id=tid,
                            start=record["start_timestamp"],
                            stop=clock.stored(stopped))  # fmt: skip
    # Once: the first stop to commit closes it. A second, different one
    # handled before that commit (same batch, or another replica) could not
    # see it closed above; the commit records it as an anomaly then.
    ctx.effects.hset_once(
        keys.transaction(tid),
        {**stop, "energy_wh": str(max(meter_stop - meter_start, 0))},
        marker="closed",
        fallback=keys.ANOMALIES,
        kind="StopTransaction for a closed transaction",
    )
    # Kept for late and offline-queued messages (a retried stop, meter
    # values), then left to history.
    ctx.effects.call("EXPIRE", keys.transaction(tid), ctx.config.closed_transaction_ttl_s)
    ctx.effects.call("SREM", keys.ACTIVE_TRANSACTIONS, tid)
    ctx.effects.unset_if(keys.id_tag_active(record.get("id_tag", "")), tid)
    connector = record.get("connector_id")
    if connector is not None:
        ctx.effects.unset_if(keys.connector(cp, int(connector)), tid, field="transaction_id")


def _without_nul(values: Sequence[SampledValue | TransactionSampledValue]) -> bytes:
    """The sampled values with U+FFFD for each NUL in a value: JSON lets a
    charger send one, PostgreSQL's text (what ``->>`` makes of a sample)
    cannot hold it."""
    return _values.encode(
        [msgspec.structs.replace(sv, value=sv.value.replace("\x00", "\ufffd")) for sv in values]
    )


def _connector_of(record: dict[str, str] | None) -> int:
    return int(record["connector_id"]) if record and "connector_id" in record else 0


async def meter_values(ctx: Context, req: MeterValues) -> MeterValuesResponse:
    _store_samples(ctx, req.connector_id, req.transaction_id, req.meter_value)
    return MeterValuesResponse()


def _store_samples(
    ctx: Context,
    connector_id: int,
    transaction_id: int | None,
    readings: Sequence[MeterValue | TransactionMeterValue],
) -> None:
    """Every sampled value to history, one record per meterValue; the
    connector keeps only the latest value per measurand, newest-wins."""
    cp = ctx.charge_point_id
    latest: dict[str, str] = {}
    oldest = newest = ""
    for reading in readings:
        when = trusted_time(ctx, reading.timestamp, "meter value")
        stamp = clock.stored(when)
        if reading.sampled_value:
            oldest = min(oldest, stamp) if oldest else stamp
            newest = max(newest, stamp)
        head = stamp + " "
        for sv in reading.sampled_value:
            where = (sv.measurand, sv.phase, sv.location)
            name = LATEST_NAMES.get(where) or latest_name(where)
            seen = latest.get(name)
            # Stamps are fixed-width: the newest reading's value wins.
            if seen is None or seen <= stamp:
                latest[name] = head + (sv.unit or "Wh") + " " + sv.value
        values = _values.encode(reading.sampled_value)
        if b"\\u0000" in values:
            values = _without_nul(reading.sampled_value)
        ctx.effects.record(history.MeterReading(cp, connector_id, transaction_id, stamp, values))
    ctx.effects.latest(keys.meter_latest(cp, connector_id), latest, oldest=oldest, newest=newest)
    ctx.effects.sadd(keys.connectors(cp), str(connector_id))
