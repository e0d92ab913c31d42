"""Which replicas of the long-running services run, and where their health
probes answer: the hash ``ocpp:instances``.

A processor, adapter or gateway keeps one field there while it runs,
``<service>@<host>:<pid>``, whose value is its :class:`Instance` as JSON. It
writes the field as it starts and every :data:`REFRESH_S` seconds after, and
deletes it as it stops (SIGTERM). A replica killed outright cannot: its field
stays until its ``last_seen_ms`` is older than :data:`STALE_AFTER_MS`, when
readers ignore it and the next refresh of any replica deletes it.

With replicas on one host, only one has the configured health port (the
others took a free one, see :func:`processor.health.listen`): this is where
an operator or a script finds each one's (``ocpp-cli instances``).

Times are epoch milliseconds by the clock of the host that wrote them, and
read by another host's: hosts whose clocks disagree by tens of seconds would
take each other's replicas for dead.

The pure part (what a field holds, what is stale) comes first; the Redis
part (:class:`Registry`, :func:`read`) after it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final

import anyio
import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from processor import keys
from processor.lifecycle import Stopper
from processor.redis_io import describe

if TYPE_CHECKING:
    # For its type only: ocpp-cli reads the registry, and a health check
    # that runs it every few seconds should not import uvicorn.
    from processor.health import HealthServer

log = logging.getLogger(__name__)

REFRESH_S: Final = 10.0
# Three refreshes missed: a replica that is merely slow (a long GC, Redis
# away for a few seconds) is not taken for dead.
STALE_AFTER_MS: Final = int(3 * REFRESH_S * 1000)
# How long a stopping replica gives Redis to take its field away.
REMOVE_TIMEOUT_S: Final = 1.0
# What Redis may throw at a registry: ConnectionError and the like are
# RedisErrors; the socket's own errors are OSErrors.
_FAULTS: Final = (RedisError, OSError)
# Addresses that mean "every interface": the URL names the host instead.
_ANY: Final = frozenset({"0.0.0.0", "::", ""})


class Instance(msgspec.Struct, kw_only=True, frozen=True):
    """One running replica, as its field in ``ocpp:instances`` holds it."""

    service: str
    host: str
    pid: int
    # http://<host>:<port>, the probes' base; empty when they are off (port 0).
    health_url: str = ""
    # The processor's name in the consumer group; empty for other services.
    consumer: str = ""
    started_ms: int
    last_seen_ms: int

    @property
    def field(self) -> str:
        return f"{self.service}@{self.host}:{self.pid}"


class Seen(msgspec.Struct, kw_only=True, frozen=True):
    """An instance as ``ocpp-cli instances`` shows it."""

    service: str
    host: str
    pid: int
    consumer: str
    health_url: str
    last_seen_s_ago: float


class Listing(msgspec.Struct, kw_only=True, frozen=True):
    instances: list[Seen]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Instance)


def encode(instance: Instance) -> bytes:
    return _encoder.encode(instance)


def decode(raw: bytes | str) -> Instance | None:
    """The instance ``raw`` describes; None if it is not one."""
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:  # ValidationError included
        return None


def health_url(hostname: str, address: str, port: int) -> str:
    """Where the probes of a server listening on ``address:port`` are found
    from elsewhere: by ``hostname`` when it listens on every interface."""
    if not port:
        return ""
    host = hostname if address in _ANY else address
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def is_stale(instance: Instance, now_ms: int) -> bool:
    return now_ms - instance.last_seen_ms > STALE_AFTER_MS


def sort_out(
    entries: Mapping[bytes | str, bytes | str], now_ms: int
) -> tuple[list[Instance], list[bytes | str]]:
    """The live instances among a hash's ``entries``, by service, host and
    pid; and the fields to delete: stale ones, and any that holds no
    instance (nothing of ours writes one, and nothing would ever take it
    away)."""
    live: list[Instance] = []
    dead: list[bytes | str] = []
    for name, raw in entries.items():
        instance = decode(raw)
        if instance is None or is_stale(instance, now_ms):
            dead.append(name)
        else:
            live.append(instance)
    live.sort(key=lambda i: (i.service, i.host, i.pid))
    return live, dead


def listing(instances: list[Instance], now_ms: int) -> Listing:
    return Listing(
        instances=[
            Seen(
                service=i.service, host=i.host, pid=i.pid, consumer=i.consumer,
                health_url=i.health_url,
                last_seen_s_ago=round((now_ms - i.last_seen_ms) / 1000, 1),
            )
            for i in instances
        ]
    )  # fmt: skip


# --- Redis ------------------------------------------------------------------------


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def this_process(service: str, health: HealthServer, consumer: str = "") -> Instance:
    """This process as an instance of ``service``, seen now."""
    hostname, now = socket.gethostname(), now_ms()
    return Instance(
        service=service, host=hostname, pid=os.getpid(),
        health_url=health_url(hostname, health.host, health.port), consumer=consumer,
        started_ms=now, last_seen_ms=now,
    )  # fmt: skip


class Registry:
    """Keeps ``me`` in ``ocpp:instances`` from :meth:`run` until :meth:`stop`,
    then takes it out.

    Redis failing is never this service's problem: a refresh that fails or
    gets no answer within the interval is given up and tried again at the
    next, logged once per outage; a removal that fails leaves the field to
    go stale."""

    def __init__(
        self,
        redis: Redis,
        me: Instance,
        *,
        interval_s: float = REFRESH_S,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self._redis = redis
        self._me = me
        self._interval_s = interval_s
        self._clock = clock
        self._stopper = Stopper()
        self._failing = False

    async def run(self) -> None:
        try:
            while not self._stopper.stopping:
                # A refresh cut short by stop() is harmless: the field goes next.
                with self._stopper.interruptible():
                    await self.refresh()
                    await anyio.sleep(self._interval_s)
        finally:
            await self._remove()

    def stop(self) -> None:
        self._stopper.stop()

    async def refresh(self) -> None:
        """Write this instance, seen now; delete the fields of dead ones."""
        now = self._clock()
        me = msgspec.structs.replace(self._me, last_seen_ms=now)
        try:
            with anyio.fail_after(self._interval_s):
                pipe = self._redis.pipeline(transaction=False)
                pipe.hset(keys.INSTANCES, me.field, encode(me))
                pipe.hgetall(keys.INSTANCES)
                _, entries = await pipe.execute()
                _, dead = sort_out(entries, now)
                if dead:
                    await self._redis.hdel(keys.INSTANCES, *dead)
        # Before _FAULTS: the builtin TimeoutError is an OSError.
        except TimeoutError:
            self._failed(f"no answer within {self._interval_s:g} s")
        except _FAULTS as exc:
            self._failed(describe(exc))
        else:
            if self._failing:
                log.info("%s is in %s again", me.field, keys.INSTANCES)
                self._failing = False

    def _failed(self, why: str) -> None:
        if not self._failing:
            log.warning(
                "cannot keep %s in %s (%s); trying again every %g s",
                self._me.field, keys.INSTANCES, why, self._interval_s,
            )  # fmt: skip
            self._failing = True

    async def _remove(self) -> None:
        # Shielded: the task group around may be cancelled (the service
        # failed), and a replica that exits should not stay listed.
        why = f"no answer within {REMOVE_TIMEOUT_S:g} s"
        with anyio.CancelScope(shield=True), anyio.move_on_after(REMOVE_TIMEOUT_S):
            try:
                await self._redis.hdel(keys.INSTANCES, self._me.field)
                return
            except _FAULTS as exc:
                why = describe(exc)
        log.warning("%s left in %s until it goes stale (%s)", self._me.field, keys.INSTANCES, why)


async def registered(
    redis: Redis,
    service: str,
    health: HealthServer,
    main: Callable[[], Awaitable[None]],
    *,
    consumer: str = "",
) -> None:
    """Await ``main()`` with ``health`` answering probes and this process
    in ``ocpp:instances`` as an instance of ``service``; both stop after it."""
    registry = Registry(redis, this_process(service, health, consumer))
    async with anyio.create_task_group() as tg:
        tg.start_soon(registry.run)
        await health.alongside(main)
        registry.stop()


async def read(redis: Redis, now: int | None = None) -> list[Instance]:
    """The live instances, by service, host and pid (read only: dead ones
    are left for the replicas to delete)."""
    entries = await redis.hgetall(keys.INSTANCES)
    live, _ = sort_out(entries, now_ms() if now is None else now)
    return live
