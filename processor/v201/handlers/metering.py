"""Meter values outside a transaction (MeterValues), OCPP 2.0.1: the latest
value per measurand in hot state, every meterValue to history."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import msgspec

from processor import clock, history, keys
from processor.handler_common import LATEST_NAMES, latest_name, trusted_time
from processor.types import Context
from processor.v201.messages import MeterValues, MeterValuesResponse, MeterValueType

_values = msgspec.json.Encoder()


def store_samples(
    ctx: Context,
    evse_id: int,
    readings: Sequence[MeterValueType],
    transaction_id: str | None = None,
) -> None:
    """Every meterValue to history (its sampled values as 2.0.1 spells them:
    numeric values, unitOfMeasure, signedMeterValue byte for byte); the EVSE
    keeps the latest value per measurand, newest wins, under the latest-values
    key 1.6 gives a connector (``:latest``), the value scaled by its unit's
    multiplier (a power of ten) so it reads in the unit itself."""
    cp = ctx.charge_point_id
    latest: dict[str, str] = {}
    oldest = newest = ""
    for reading in readings:
        stamp = clock.stored(trusted_time(ctx, reading.timestamp, "meter value"))
        oldest = min(oldest, stamp) if oldest else stamp
        newest = max(newest, stamp)
        for sv in reading.sampled_value:
            where = (sv.measurand, sv.phase, sv.location)
            name = LATEST_NAMES.get(where) or latest_name(where)
            seen = latest.get(name)
            if seen is None or seen <= stamp:
                unit = sv.unit_of_measure
                if unit is None:
                    latest[name] = f"{stamp} Wh {_scaled(sv.value, 0)}"
                else:
                    value = _scaled(sv.value, unit.multiplier)
                    latest[name] = f"{stamp} {unit.unit} {value}"
        values = _values.encode(reading.sampled_value)
        ctx.effects.record(history.MeterReading(cp, evse_id, transaction_id, stamp, values))
    ctx.effects.latest(keys.meter_latest(cp, evse_id), latest, oldest=oldest, newest=newest)


# Multipliers past this stay an exponent in the text: the schema bounds
# none, and a station's 10^999999 must neither crash nor fill Redis.
MAX_MULTIPLIER = 30


def _scaled(value: float, multiplier: int) -> str:
    """``value`` times ten to ``multiplier``, exactly, as plain decimal text
    (``<value>e<multiplier>`` past MAX_MULTIPLIER)."""
    if not multiplier and -1e15 < value < 1e15:
        # The usual case, 5x quicker: repr is already exact and plain here
        # (it turns to exponents only from 1e16 or below 1e-4).
        if value.is_integer():
            return str(int(value))
        if value >= 1e-4 or value <= -1e-4:
            return repr(value)
    if not -MAX_MULTIPLIER <= multiplier <= MAX_MULTIPLIER:
        return f"{value!r}e{multiplier}"
    text = format(Decimal(repr(value)).scaleb(multiplier), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


async def meter_values(ctx: Context, req: MeterValues) -> MeterValuesResponse:
    store_samples(ctx, req.evse_id, req.meter_value)
    return MeterValuesResponse()
