"""Smart charging profiles, as SetChargingProfile, RemoteStartTransaction and
GetCompositeSchedule carry them.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from processor.v16.messages.common import DateTime, Omittable, Payload

ChargingProfilePurpose = Literal["ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"]
ChargingProfileKind = Literal["Absolute", "Recurring", "Relative"]
RecurrencyKind = Literal["Daily", "Weekly"]
ChargingRateUnit = Literal["A", "W"]


def is_tenths(value: float) -> bool:
    """Whether ``value`` meets the schemas' ``multipleOf: 0.1``.

    msgspec's ``multiple_of`` takes the float remainder, which refuses even
    16 (16 % 0.1 is 0.0999...). This accepts what JSON Schema validators
    accept (``value / 0.1`` is a whole float) and also what their float
    division refuses though it has one decimal, as 0.3 (0.3 / 0.1 is
    2.9999999999999996).
    """
    if value.is_integer() or (value / 0.1).is_integer():
        return True
    # repr is the shortest decimal that reads back as value: what was sent.
    exponent = Decimal(repr(value)).as_tuple().exponent
    return isinstance(exponent, int) and exponent >= -1


def _check_tenths(value: float | None) -> None:
    if value is not None and not is_tenths(value):
        # msgspec's own wording for multiple_of, so errors map alike.
        raise ValueError("Expected `float` that's a multiple of 0.1")


class ChargingSchedulePeriod(Payload):
    """A limit from ``start_period`` seconds after the schedule's start."""

    start_period: int
    limit: float
    number_phases: Omittable[int] = None

    def __post_init__(self) -> None:
        _check_tenths(self.limit)


class ChargingSchedule(Payload):
    """Power or current limits over time."""

    charging_rate_unit: ChargingRateUnit
    charging_schedule_period: list[ChargingSchedulePeriod]
    duration: Omittable[int] = None
    start_schedule: Omittable[DateTime] = None
    min_charging_rate: Omittable[float] = None

    def __post_init__(self) -> None:
        _check_tenths(self.min_charging_rate)


class ChargingProfile(Payload):
    """A charging schedule, what it limits and when it applies."""

    charging_profile_id: int
    stack_level: int
    charging_profile_purpose: ChargingProfilePurpose
    charging_profile_kind: ChargingProfileKind
    charging_schedule: ChargingSchedule
    transaction_id: Omittable[int] = None
    recurrency_kind: Omittable[RecurrencyKind] = None
    valid_from: Omittable[DateTime] = None
    valid_to: Omittable[DateTime] = None
