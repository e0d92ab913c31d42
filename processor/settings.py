"""Service settings from environment variables, each with a matching CLI flag.

``REDIS_URL`` keeps the name the user's guide gives it; every other setting is
``OCPP_<NAME>`` in the environment and ``--<name>`` on the command line (the
flag wins). Settings are typed msgspec Structs, so a bad value is refused at
start with the setting's name rather than failing later.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar, get_type_hints

import msgspec
from msgspec import Meta

S = TypeVar("S", bound=msgspec.Struct)

RedisUrl = Annotated[str, Meta(description="Redis to connect to (redis://, rediss:// or unix://)")]
LogLevel = Annotated[str, Meta(description="log level: DEBUG, INFO, WARNING, ERROR")]
# Each service has its own default, so they can all run on one host.
HealthPort = Annotated[
    int, Meta(ge=0, le=65535, description="port answering GET /livez and /readyz (0: none)")
]


def default_consumer_name() -> str:
    """Unique per replica: host (the container id under Docker) and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


# The processors read an envelope that names no version in it, and the API
# and CLI validate a command to a charger that has not said which it speaks
# (on the allow-list, never booted), in this one: set it alike for all.
DefaultProtocol = Annotated[
    Literal["ocpp1.6", "ocpp2.0.1"],
    Meta(
        description="OCPP version of a charger that has registered none (and of an envelope"
        " that names none)"
    ),
]


class ProcessorSettings(msgspec.Struct, kw_only=True, frozen=True):
    redis_url: RedisUrl = "redis://localhost:6379/0"
    heartbeat_interval: Annotated[
        int,
        Meta(ge=1, description="interval (s) a BootNotification tells chargers to heartbeat at"),
    ] = 300
    batch_size: Annotated[int, Meta(ge=1, description="entries read per XREADGROUP")] = 256
    read_block_ms: Annotated[
        int, Meta(ge=1, description="how long one XREADGROUP blocks when the stream is idle")
    ] = 2000
    claim_min_idle_ms: Annotated[
        int, Meta(ge=1, description="an entry pending this long is taken over (XAUTOCLAIM)")
    ] = 15000
    claim_interval_ms: Annotated[
        int, Meta(ge=1, description="how often a replica looks for entries to take over")
    ] = 5000
    max_deliveries: Annotated[
        int, Meta(ge=1, description="deliveries after which an entry is dead-lettered")
    ] = 5
    max_envelope_bytes: Annotated[
        int, Meta(ge=256, description="larger envelopes are refused with a CALLERROR")
    ] = 65536
    reply_ttl_s: Annotated[
        int, Meta(ge=1, description="expiry of a charger's reply list (ocpp:responses:{id})")
    ] = 300
    concurrency: Annotated[
        int, Meta(ge=1, description="chargers handled at once within a batch")
    ] = 64
    consumer_name: Annotated[
        str, Meta(description="consumer name in the group (default: host-pid)")
    ] = ""
    consumer_gc_idle_ms: Annotated[
        int, Meta(ge=1, description="idle consumers holding nothing are removed after this")
    ] = 3_600_000
    dead_maxlen: Annotated[
        int, Meta(ge=1, description="approximate cap of ocpp:dead and ocpp:anomalies")
    ] = 100_000
    idempotency_ttl_s: Annotated[
        int, Meta(ge=1, description="how long a StartTransaction retry maps to its transactionId")
    ] = 7 * 86400
    registration_policy: Annotated[
        Literal["accept-all", "known-only"],
        Meta(description="accept every charger, or only those in ocpp:chargers:known"),
    ] = "accept-all"
    unknown_charger_status: Annotated[
        Literal["Pending", "Rejected"],
        Meta(description="what known-only tells a charger not on the list"),
    ] = "Pending"
    unknown_id_tag: Annotated[
        Literal["Accepted", "Invalid"],
        Meta(description="what an idTag not in the authorization list is told"),
    ] = "Accepted"
    allow_concurrent_tx: Annotated[
        bool, Meta(description="let one idTag charge in several transactions at once")
    ] = False
    max_session_s: Annotated[
        int, Meta(ge=1, description="after this, an idTag never stopped stops counting as busy")
    ] = 86_400
    max_clock_skew_s: Annotated[
        int, Meta(ge=0, description="charger timestamps further ahead are anomalies")
    ] = 600
    closed_transaction_ttl_s: Annotated[
        int,
        Meta(ge=1, description="how long a closed transaction stays in Redis for late messages"),
    ] = 7 * 86400
    data_transfer_handlers: Annotated[
        str,
        Meta(description="DataTransfer handlers: vendorId=module:function, comma-separated"),
    ] = ""
    command_sweep_ms: Annotated[
        int, Meta(ge=10, description="how often commands past their deadline are timed out")
    ] = 500
    command_retention_s: Annotated[
        int, Meta(ge=1, description="how long a command's record is kept")
    ] = 7 * 86400
    default_protocol: DefaultProtocol = "ocpp1.6"
    health_port: HealthPort = 9101
    log_level: LogLevel = "INFO"


class AdapterSettings(msgspec.Struct, kw_only=True, frozen=True):
    redis_url: RedisUrl = "redis://localhost:6379/0"
    adapter_batch: Annotated[
        int, Meta(ge=1, le=10000, description="envelopes moved per atomic step")
    ] = 512
    trim_interval_ms: Annotated[
        int, Meta(ge=1, description="how often the stream is trimmed of acknowledged entries")
    ] = 1000
    health_port: HealthPort = 9102
    log_level: LogLevel = "INFO"


# Settings named as the wider world names them: REDIS_URL as the user's
# guide gives it, DATABASE_URL by convention.
_UNPREFIXED = frozenset({"redis_url", "database_url"})


def env_name(field: str) -> str:
    return field.upper() if field in _UNPREFIXED else "OCPP_" + field.upper()


def describe(cls: type[msgspec.Struct]) -> list[tuple[str, str, Any, str]]:
    """(env name, flag, default, description) for every setting of ``cls``."""
    hints = get_type_hints(cls, include_extras=True)
    rows = []
    for f in msgspec.structs.fields(cls):
        meta = [m for m in getattr(hints[f.name], "__metadata__", ()) if isinstance(m, Meta)]
        text = next((m.description for m in meta if m.description), "")
        rows.append((env_name(f.name), "--" + f.name.replace("_", "-"), f.default, text))
    return rows


def load(
    cls: type[S],
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    prog: str | None = None,
) -> S:
    """Settings of type ``cls`` from ``argv`` over ``environ`` over defaults."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog=prog, description=cls.__doc__)
    for env, flag, default, text in describe(cls):
        parser.add_argument(flag, default=None, help=f"{text} [env {env}, default {default!r}]")
    ns = parser.parse_args(argv)
    values: dict[str, str] = {}
    for f in msgspec.structs.fields(cls):
        value = getattr(ns, f.name)
        if value is None:
            value = environ.get(env_name(f.name))
        if value is not None:
            values[f.name] = value
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        parser.error(f"invalid setting: {exc}")
