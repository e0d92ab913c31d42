"""``ocpp-archiver``'s settings, read like every service's (``processor.settings.load``)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from processor.settings import HealthPort, LogLevel, RedisUrl

DatabaseUrl = Annotated[str, Meta(description="PostgreSQL to write history to (postgresql://...)")]


class ArchiverSettings(msgspec.Struct, kw_only=True, frozen=True):
    database_url: DatabaseUrl = "postgresql://localhost:5432/ocpp"
    redis_url: RedisUrl = "redis://localhost:6379/0"
    archiver_batch: Annotated[
        int, Meta(ge=1, le=10_000, description="history entries written per transaction")
    ] = 64
    claim_idle_ms: Annotated[
        int, Meta(ge=1, description="history a dead archiver left pending is taken after this")
    ] = 60_000
    consumer_name: Annotated[
        str, Meta(description="consumer name in the archivers group (default: host-pid)")
    ] = ""
    migrate: Annotated[bool, Meta(description="apply the schema's migrations at start (run)")] = (
        False
    )
    retention_months: Annotated[
        int, Meta(ge=0, description="drop meter values older than this many months (0: keep)")
    ] = 0
    nice: Annotated[
        int,
        Meta(
            ge=0, le=19, description="lower the archiver's CPU priority by this (os.nice; 0: not)"
        ),
    ] = 10
    health_port: HealthPort = 9103
    log_level: LogLevel = "INFO"
