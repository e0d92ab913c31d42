"""``ocpp-sim``'s settings: flags, with ``OCPP_SIM_*`` environment defaults."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from typing import Annotated, Any, get_type_hints

import msgspec
from msgspec import Meta

from processor.protocol_names import OCPP16, OCPP201

PROTOCOLS = (OCPP16, OCPP201)


class SimSettings(msgspec.Struct, kw_only=True, frozen=True):
    """Simulated OCPP 1.6 and 2.0.1 chargers: sessions, commands answered, latency and errors."""

    url: Annotated[str, Meta(description="central system, ws[s]://host:port")] = (
        "ws://localhost:8080"
    )
    chargers: Annotated[int, Meta(ge=1, description="chargers to simulate")] = 10
    sessions: Annotated[
        int,
        Meta(ge=-1, description="sessions per charger (-1: unlimited with --duration, else 1)"),
    ] = -1
    rate: Annotated[
        float, Meta(ge=0, description="max CALLs per second across the fleet (0: unlimited)")
    ] = 0.0
    duration: Annotated[
        float, Meta(ge=0, description="stop starting sessions after this many s (0: no limit)")
    ] = 0.0
    meter_values: Annotated[
        int,
        Meta(ge=0, description="meter readings per session (MeterValues; 2.0.1: "
                               "TransactionEvent Updated)"),
    ] = 3  # fmt: skip
    prefix: Annotated[str, Meta(min_length=1, max_length=40, description="charger id prefix")] = (
        "SIM"
    )
    linger: Annotated[
        float, Meta(ge=0, description="stay connected this many s after the sessions")
    ] = 0.0
    timeout: Annotated[float, Meta(gt=0, description="seconds to wait for a CALL's result")] = 30.0
    protocol: Annotated[
        str,
        Meta(description="OCPP version of every charger (ocpp1.6 or ocpp2.0.1), or the fleet's "
                         "shares: ocpp1.6=0.7,ocpp2.0.1=0.3"),
    ] = OCPP16  # fmt: skip
    json: Annotated[bool, Meta(description="print the summary as JSON")] = False
    quiet: Annotated[bool, Meta(description="no progress line on stderr")] = False

    def __post_init__(self) -> None:
        protocol_shares(self.protocol)  # a clear error now rather than at the first charger

    @property
    def protocols(self) -> list[str]:
        """Each charger's OCPP version, charger 1 first."""
        return assign_protocols(protocol_shares(self.protocol), self.chargers)

    @property
    def sessions_per_charger(self) -> int | None:
        """None: unlimited (until --duration)."""
        if self.sessions >= 0:
            return self.sessions
        return None if self.duration > 0 else 1


def protocol_shares(text: str) -> dict[str, float]:
    """``ocpp2.0.1`` (every charger) or ``ocpp1.6=0.7,ocpp2.0.1=0.3`` (shares,
    scaled to sum to 1) as {version: share}; ValueError says what is wrong."""
    text = text.strip()
    if text in PROTOCOLS:
        return {text: 1.0}
    known = " or ".join(PROTOCOLS)
    shares: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = (p.strip() for p in part.partition("="))
        if name not in PROTOCOLS:
            raise ValueError(f"protocol {name!r} is not {known}")
        if not sep:
            raise ValueError(f"{name} among several protocols needs a share: {name}=0.5")
        if name in shares:
            raise ValueError(f"protocol {name} given twice")
        try:
            share = float(value)
        except ValueError:
            raise ValueError(f"share of {name} is not a number: {value!r}") from None
        if not math.isfinite(share) or share < 0:
            raise ValueError(f"share of {name} must be a number >= 0, not {value}")
        shares[name] = share
    total = sum(shares.values())
    if total <= 0:
        raise ValueError(f"protocol shares add up to 0: {text!r}")
    return {name: share / total for name, share in shares.items()}


def assign_protocols(shares: dict[str, float], chargers: int) -> list[str]:
    """Each of ``chargers`` chargers' version, charger 1 first: the version
    furthest behind its share so far, the first listed on a tie. So every
    run assigns alike, a charger's version does not depend on the fleet's
    size, and every prefix of the fleet is within one charger of its shares."""
    counts = dict.fromkeys(shares, 0)
    assigned = []
    for n in range(1, chargers + 1):
        name = max(shares, key=lambda p: shares[p] * n - counts[p])
        counts[name] += 1
        assigned.append(name)
    return assigned


def parse(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> SimSettings:
    """Flags over ``OCPP_SIM_<NAME>`` environment variables over defaults."""
    environ = dict(os.environ) if environ is None else environ
    parser = argparse.ArgumentParser(prog="ocpp-sim", description=SimSettings.__doc__)
    hints = get_type_hints(SimSettings, include_extras=True)
    for f in msgspec.structs.fields(SimSettings):
        flag = "--" + f.name.replace("_", "-")
        env = "OCPP_SIM_" + f.name.upper()
        meta = [m for m in getattr(hints[f.name], "__metadata__", ()) if isinstance(m, Meta)]
        text = next((m.description for m in meta if m.description), "")
        if isinstance(f.default, bool):
            parser.add_argument(flag, action="store_true", default=None, help=f"{text} [env {env}]")
        else:
            help_ = f"{text} [env {env}, default {f.default!r}]"
            parser.add_argument(flag, default=None, help=help_)
    ns = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for f in msgspec.structs.fields(SimSettings):
        value = getattr(ns, f.name)
        if value is None:
            value = environ.get("OCPP_SIM_" + f.name.upper())
        if value is not None:
            values[f.name] = value
    try:
        return msgspec.convert(values, SimSettings, strict=False)
    except msgspec.ValidationError as exc:
        parser.error(f"invalid setting: {exc}")
