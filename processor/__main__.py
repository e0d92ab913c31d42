"""``ocpp-processor``: one replica of the consumer group."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence

import anyio
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from processor import keys
from processor.command_queue import CommandQueue, Sweeper
from processor.consumer import Consumer
from processor.dispatch import Dispatcher, Limits
from processor.health import HealthServer, redis_probe
from processor.instances import registered
from processor.lifecycle import run_until_signalled
from processor.logs import setup
from processor.protocols import protocols
from processor.redis_io import TRANSIENT, connect, group_info
from processor.settings import ProcessorSettings, default_consumer_name, load
from processor.state import RedisState
from processor.stream import GroupStream
from processor.telemetry import Providers, configured
from processor.types import DataTransferHandler, HandlerConfig

log = logging.getLogger("processor")


async def serve(settings: ProcessorSettings, providers: Providers | None = None) -> None:
    """Run one replica until SIGTERM or SIGINT, then drain and return.
    Telemetry goes to ``providers`` (none by default)."""
    tracer_provider = providers.tracer_provider if providers else None
    meter_provider = providers.meter_provider if providers else None
    redis = connect(settings.redis_url)
    name = settings.consumer_name or default_consumer_name()
    stream = GroupStream(
        redis, name, reply_ttl_ms=settings.reply_ttl_s * 1000, dead_maxlen=settings.dead_maxlen
    )
    dispatcher = Dispatcher(
        protocols(settings.default_protocol),
        RedisState(redis, settings.idempotency_ttl_s, settings.max_session_s),
        handler_config(settings),
        Limits(settings.max_envelope_bytes, settings.max_deliveries, settings.concurrency),
        transient=TRANSIENT,
    )
    consumer = Consumer(
        stream, dispatcher, settings, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    queue = CommandQueue(
        redis, reply_ttl_s=settings.reply_ttl_s, retention_s=settings.command_retention_s,
        tracer_provider=tracer_provider,
    )  # fmt: skip
    sweeper = Sweeper(queue, settings.command_sweep_ms / 1000, meter_provider)
    # Ready once Redis answers and the group the consumer creates exists.
    health = HealthServer(
        redis_probe(redis, group=stream.group, stream=stream.stream), settings.health_port
    )

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sweeper.run)
            tg.start_soon(warn_without_archiver, redis)
            await registered(redis, "processor", health, consumer.run, consumer=name)
            sweeper.stop()
            tg.cancel_scope.cancel()

    def stop() -> None:
        consumer.stop()
        sweeper.stop()

    log.info("consumer %s starting", name)
    try:
        await run_until_signalled(run, stop, log)
    finally:
        await redis.aclose()
    log.info("consumer %s stopped after %d entries", name, consumer.handled)


async def warn_without_archiver(redis: Redis, every_s: float = 60.0) -> None:
    """Say so, once, if history is being appended and no ocpp-archiver has
    read it a minute on: it then piles up in Redis."""
    while True:
        await anyio.sleep(every_s)
        try:
            groups = await redis.xinfo_groups(keys.HISTORY)
        except ResponseError:  # no stream yet: nothing appended so far
            continue
        except TRANSIENT:
            continue  # the consumer's own backoff says Redis is down
        if group_info(groups, keys.ARCHIVERS) is None:
            log.warning(
                "no ocpp-archiver reads %s: history accumulates in Redis until one runs "
                "(README, ocpp-archiver)",
                keys.HISTORY,
            )
        return


def handler_config(s: ProcessorSettings) -> HandlerConfig:
    return HandlerConfig(
        heartbeat_interval=s.heartbeat_interval,
        registration_policy=s.registration_policy,
        unknown_charger_status=s.unknown_charger_status,
        unknown_id_tag_status=s.unknown_id_tag,
        allow_concurrent_tx=s.allow_concurrent_tx,
        max_clock_skew_s=s.max_clock_skew_s,
        closed_transaction_ttl_s=s.closed_transaction_ttl_s,
        vendors=load_vendors(s.data_transfer_handlers),
    )


def load_vendors(spec: str) -> dict[str, DataTransferHandler]:
    """``vendorId=package.module:function,...`` -> the DataTransfer handlers."""
    vendors: dict[str, DataTransferHandler] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        vendor, _, target = item.partition("=")
        module, _, name = target.partition(":")
        if not (vendor and module and name):
            raise SystemExit(
                f"OCPP_DATA_TRANSFER_HANDLERS: expected vendorId=module:function, got {item!r}"
            )
        vendors[vendor] = getattr(importlib.import_module(module), name)
    return vendors


def main(argv: Sequence[str] | None = None) -> None:
    settings = load(ProcessorSettings, argv, prog="ocpp-processor")
    setup(settings.log_level, "processor")
    with configured("ocpp-processor") as providers:
        anyio.run(serve, settings, providers, backend="asyncio")


if __name__ == "__main__":
    main()
