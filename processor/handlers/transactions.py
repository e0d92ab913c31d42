"""Transactions and meter values.

A StartTransaction's transaction is opened by an idempotent reservation
(``processor/lua/open_transaction.lua``) keyed on its content, so a retry,
under the same or a new message id, gets the same transactionId. Everything
else is written at commit, and written so that the result does not depend
on the order redelivered or late messages are handled in: samples are set
members, latest values and statuses are newest-wins, a transaction is closed
once and its first stop is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from processor import clock, keys
from processor.handlers.common import id_tag_info, trusted_time
from processor.messages import (
    MeterValues,
    MeterValuesResponse,
    StartTransaction,
    StartTransactionResponse,
    StopTransaction,
    StopTransactionResponse,
)
from processor.messages.metering import MeterValue, TransactionMeterValue
from processor.types import Context

_sample = msgspec.json.Encoder()


async def start_transaction(ctx: Context, req: StartTransaction) -> StartTransactionResponse:
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
    ctx.effects.call("SADD", keys.connectors(ctx.charge_point_id), req.connector_id)
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
    if record is None or "start_timestamp" not in record:
        ctx.effects.anomaly(cp, "StopTransaction for an unknown transaction",
                            message_id=ctx.message_id, transaction_id=tid, **stop)  # fmt: skip
    elif "stop_timestamp" in record:
        if any(record.get(k) != v for k, v in stop.items()):
            ctx.effects.anomaly(cp, "StopTransaction for a closed transaction",
                                message_id=ctx.message_id, transaction_id=tid, **stop)  # fmt: skip
    else:
        _close(ctx, tid, record, stop, req.meter_stop, stopped)
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
    meter_start = int(record.get("meter_start", "0"))
    if meter_stop < meter_start:
        ctx.effects.anomaly(cp, "meterStop below meterStart", transaction_id=tid,
                            meter_start=meter_start, meter_stop=meter_stop)  # fmt: skip
    if clock.stored(stopped) < record["start_timestamp"]:
        ctx.effects.anomaly(cp, "stop before start", transaction_id=tid,
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
    ctx.effects.call("SREM", keys.ACTIVE_TRANSACTIONS, tid)
    ctx.effects.unset_if(keys.id_tag_active(record.get("id_tag", "")), tid)
    connector = record.get("connector_id")
    if connector is not None:
        ctx.effects.unset_if(keys.connector(cp, int(connector)), tid, field="transaction_id")


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
    """Every sampled value as a member of the connector's (and the
    transaction's) sorted set, scored by time: a sample stored twice is
    stored once. The latest value per measurand is kept newest-wins."""
    cp = ctx.charge_point_id
    series = keys.meter_samples(cp, connector_id)
    txn_series = keys.transaction_samples(transaction_id) if transaction_id is not None else None
    latest = keys.meter_latest(cp, connector_id)
    for reading in readings:
        when = trusted_time(ctx, reading.timestamp, "meter value")
        stamp = clock.stored(when)
        score = clock.epoch_ms(when)
        for sv in reading.sampled_value:
            measurand = sv.measurand or "Energy.Active.Import.Register"
            name = (
                measurand
                + (f":{sv.phase}" if sv.phase else "")
                + (f"@{sv.location}" if sv.location else "")
            )
            sample = _sample.encode(
                {"timestamp": stamp, "name": name, "value": sv.value, "unit": sv.unit or "Wh",
                 "context": sv.context or "Sample.Periodic", "format": sv.format or "Raw",
                 "transaction_id": transaction_id}
            ).decode()  # fmt: skip
            ctx.effects.call("ZADD", series, score, sample)
            if txn_series is not None:
                ctx.effects.call("ZADD", txn_series, score, sample)
            ctx.effects.hset_newer(latest, {name: sample}, timestamp_field=f"{name}:at",
                                   timestamp=stamp)  # fmt: skip
    cap = -ctx.config.meter_samples_cap - 1
    ctx.effects.call("ZREMRANGEBYRANK", series, 0, cap)
    if txn_series is not None:
        ctx.effects.call("ZREMRANGEBYRANK", txn_series, 0, cap)
    ctx.effects.call("SADD", keys.connectors(cp), connector_id)
