"""``ocpp-adapter``: moves ``ocpp:requests`` into ``ocpp:inbound``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import anyio

from adapters.list_to_stream import ListToStream
from processor.health import HealthServer, redis_probe
from processor.instances import registered
from processor.lifecycle import run_until_signalled
from processor.logs import setup
from processor.redis_io import connect
from processor.settings import AdapterSettings, load
from processor.telemetry import Providers, configured

log = logging.getLogger("adapter")


async def serve(settings: AdapterSettings, providers: Providers | None = None) -> None:
    """Move envelopes until SIGTERM or SIGINT, finishing the batch in hand.
    Telemetry goes to ``providers`` (none by default)."""
    redis = connect(settings.redis_url)
    adapter = ListToStream(
        redis,
        batch=settings.adapter_batch,
        trim_interval_ms=settings.trim_interval_ms,
        tracer_provider=providers.tracer_provider if providers else None,
        meter_provider=providers.meter_provider if providers else None,
    )
    health = HealthServer(redis_probe(redis), settings.health_port)

    async def run() -> None:
        await registered(redis, "adapter", health, adapter.run)

    log.info("adapter starting")
    try:
        await run_until_signalled(run, adapter.stop, log)
    finally:
        await redis.aclose()
    log.info("adapter stopped after moving %d envelopes", adapter.moved)


def main(argv: Sequence[str] | None = None) -> None:
    settings = load(AdapterSettings, argv, prog="ocpp-adapter")
    setup(settings.log_level, "adapter")
    with configured("ocpp-adapter") as providers:
        anyio.run(serve, settings, providers, backend="asyncio")


if __name__ == "__main__":
    main()
