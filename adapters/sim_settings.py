"""``ocpp-sim``'s settings: flags, with ``OCPP_SIM_*`` environment defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Annotated, Any, get_type_hints

import msgspec
from msgspec import Meta


class SimSettings(msgspec.Struct, kw_only=True, frozen=True):
    """Simulated OCPP 1.6 chargers: sessions, commands answered, latency and errors."""

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
    meter_values: Annotated[int, Meta(ge=0, description="MeterValues per session")] = 3
    prefix: Annotated[str, Meta(min_length=1, max_length=40, description="charger id prefix")] = (
        "SIM"
    )
    linger: Annotated[
        float, Meta(ge=0, description="stay connected this many s after the sessions")
    ] = 0.0
    timeout: Annotated[float, Meta(gt=0, description="seconds to wait for a CALL's result")] = 30.0
    json: Annotated[bool, Meta(description="print the summary as JSON")] = False
    quiet: Annotated[bool, Meta(description="no progress line on stderr")] = False

    @property
    def sessions_per_charger(self) -> int | None:
        """None: unlimited (until --duration)."""
        if self.sessions >= 0:
            return self.sessions
        return None if self.duration > 0 else 1


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
