"""Meter readings, as MeterValues and StopTransaction carry them.

The two schemas disagree slightly, and each is followed: MeterValues knows
the unit "Hertz" and needs at least one reading and one sampled value in
each; StopTransaction's ``transactionData`` has neither rule.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from processor.v16.messages.common import DateTime, Omittable, Payload

ReadingContext = Literal[
    "Interruption.Begin",
    "Interruption.End",
    "Sample.Clock",
    "Sample.Periodic",
    "Transaction.Begin",
    "Transaction.End",
    "Trigger",
    "Other",
]
ValueFormat = Literal["Raw", "SignedData"]
Measurand = Literal[
    "Energy.Active.Export.Register",
    "Energy.Active.Import.Register",
    "Energy.Reactive.Export.Register",
    "Energy.Reactive.Import.Register",
    "Energy.Active.Export.Interval",
    "Energy.Active.Import.Interval",
    "Energy.Reactive.Export.Interval",
    "Energy.Reactive.Import.Interval",
    "Power.Active.Export",
    "Power.Active.Import",
    "Power.Offered",
    "Power.Reactive.Export",
    "Power.Reactive.Import",
    "Power.Factor",
    "Current.Import",
    "Current.Export",
    "Current.Offered",
    "Voltage",
    "Frequency",
    "Temperature",
    "SoC",
    "RPM",
]
Phase = Literal["L1", "L2", "L3", "N", "L1-N", "L2-N", "L3-N", "L1-L2", "L2-L3", "L3-L1"]
Location = Literal["Cable", "EV", "Inlet", "Outlet", "Body"]
UnitOfMeasure = Literal[
    "Wh",
    "kWh",
    "varh",
    "kvarh",
    "W",
    "kW",
    "VA",
    "kVA",
    "var",
    "kvar",
    "A",
    "V",
    "K",
    # Both spellings are in the schemas; "Celcius" is the 1.6 spec's typo.
    "Celcius",
    "Celsius",
    "Fahrenheit",
    "Percent",
]
MeterValuesUnitOfMeasure = Literal[UnitOfMeasure, "Hertz"]


class SampledValue(Payload):
    """One measured value of a MeterValues reading."""

    value: str
    context: Omittable[ReadingContext] = None
    format: Omittable[ValueFormat] = None
    measurand: Omittable[Measurand] = None
    phase: Omittable[Phase] = None
    location: Omittable[Location] = None
    unit: Omittable[MeterValuesUnitOfMeasure] = None


class MeterValue(Payload):
    """The values a charger sampled at one moment, in MeterValues."""

    timestamp: DateTime
    sampled_value: Annotated[list[SampledValue], msgspec.Meta(min_length=1)]


class TransactionSampledValue(Payload):
    """One measured value of a StopTransaction reading."""

    value: str
    context: Omittable[ReadingContext] = None
    format: Omittable[ValueFormat] = None
    measurand: Omittable[Measurand] = None
    phase: Omittable[Phase] = None
    location: Omittable[Location] = None
    unit: Omittable[UnitOfMeasure] = None


class TransactionMeterValue(Payload):
    """The values a charger sampled at one moment, in StopTransaction."""

    timestamp: DateTime
    sampled_value: list[TransactionSampledValue]
