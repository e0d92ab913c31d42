"""Connecting to Redis, riding out its outages, and reading its errors.

The one place that knows how Redis reports a missing or existing consumer
group, and how long to wait before trying again after a connection fault;
and the raw round trip the hot reads take (:func:`round_trip`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.resources import files
from typing import Any, Final

import anyio
import hiredis
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Faults worth waiting out: the server is restarting, loading, or unreachable.
# (BusyLoadingError is a ConnectionError.)
TRANSIENT: Final[tuple[type[Exception], ...]] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
)


def keepalive(url: str) -> dict[str, bool]:
    """TCP keepalive for a TCP URL; a unix:// socket has none to set."""
    return {} if url[:5].lower() == "unix:" else {"socket_keepalive": True}


def connect(url: str) -> Redis:
    """A client for ``url`` (``redis://``, ``rediss://`` or ``unix://``,
    redis-py's query parameters such as ``ssl_ca_certs`` included); replies stay bytes, the
    envelope is bytes. Raises ValueError, naming no part of ``url``, if it
    cannot be parsed."""
    try:
        client: Redis = Redis.from_url(url, decode_responses=False, **keepalive(url))
    except ValueError:
        # urllib's message quotes what it took for the port: with a "/", "?"
        # or "#" left unencoded in the password, that is part of the password.
        raise ValueError(
            "REDIS_URL is not a valid redis://, rediss:// or unix:// URL "
            "(percent-encode / ? # @ : % in its user name and password)"
        ) from None
    return client


# A command: its name and arguments.
Command = tuple[str | bytes | int, ...]
# hiredis's stub types its argument as a tuple of one.
_pack: Callable[[Command], bytes] = hiredis.pack_command  # type: ignore[assignment]


async def round_trip(redis: Redis, commands: Sequence[Command], wait_s: float = 0) -> list[Any]:
    """Each command's raw reply (bytes, lists, maps as the connection's RESP
    version gives them), or the ResponseError Redis answered it with, in one
    write and one read on a connection of ``redis``'s pool.

    redis-py's pipeline costs ~12 µs of Python a command (a timer per reply
    for its socket timeout, its command stack and callbacks), this ~3. One
    bound covers the round trip instead: the connection's socket timeout,
    plus ``wait_s`` for a command that blocks (XREADGROUP BLOCK). On any
    other failure, cancellation included, the connection is dropped: its
    stream may still hold replies, which must never answer another call.
    """
    pool: Any = redis.connection_pool
    connection: Any = await pool.get_connection()
    timeout = connection.socket_timeout
    try:
        limit = None if timeout is None or math.isinf(wait_s) else timeout + wait_s
        async with asyncio.timeout(limit):
            await connection.send_packed_command(b"".join(map(_pack, commands)), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(
                        await connection.read_response(disable_decoding=True, timeout=math.inf)
                    )
                except ResponseError as error:  # its own reply: read on
                    replies.append(error)
        return replies
    except BaseException as exc:
        await connection.disconnect()
        if isinstance(exc, TimeoutError):  # asyncio.timeout's, which says nothing
            raise RedisTimeoutError(f"no reply from Redis within {limit} s") from exc
        raise
    finally:
        await pool.release(connection)


def group_lost(exc: ResponseError) -> bool:
    """The group (or its stream) is gone, e.g. Redis restarted empty: NOGROUP,
    or UNBLOCKED when the stream was deleted under a blocked XREADGROUP."""
    return str(exc).startswith(("NOGROUP", "UNBLOCKED"))


def is_busygroup(exc: ResponseError) -> bool:
    """XGROUP CREATE found the group already there."""
    return str(exc).startswith("BUSYGROUP")


async def ensure_group(redis: Redis, stream: str, group: str) -> bool:
    """Create ``group`` on ``stream`` (and the stream) unless it exists.

    It starts at id 0, not ``$``: entries the adapter moved before any
    processor ran must still be handled. Returns whether it was created.
    """
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if is_busygroup(exc):
            return False
        raise
    return True


def group_info(groups: Iterable[Mapping[str, Any]], group: str) -> Mapping[str, Any] | None:
    """``group``'s entry in an XINFO GROUPS reply (names bytes or str), or None."""
    name = group.encode()
    return next((g for g in groups if g.get("name") in (group, name)), None)


async def group_exists(redis: Redis, stream: str, group: str) -> bool:
    """Whether ``group`` is on ``stream`` (False if the stream is missing)."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such key
        return False
    return group_info(groups, group) is not None


async def group_backlog(redis: Redis, stream: str, group: str) -> tuple[int | None, int | None]:
    """``group``'s lag on ``stream`` (entries not yet delivered to it; None
    when Redis cannot tell) and its pending count, by one XINFO GROUPS;
    (None, None) if the stream or the group is missing."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such key: Redis lost the stream
        return None, None
    info = group_info(groups, group)
    if info is None:
        return None, None
    lag = info.get("lag")
    return (None if lag is None else int(lag)), int(info.get("pending") or 0)


def script(redis: Redis, package: str, name: str, *includes: str) -> AsyncScript:
    """The Lua script ``<package>/lua/<name>.lua``, run by EVALSHA (reloaded
    by redis-py after a restart wiped the script cache). ``includes`` name
    files of the same folder whose functions it uses: scripts cannot call
    one another, so shared Lua is prepended, after the shebang line."""
    folder = files(package).joinpath("lua")
    source = folder.joinpath(f"{name}.lua").read_text()
    shebang, _, body = source.partition("\n") if source.startswith("#!") else ("", "", source)
    shared = [folder.joinpath(f"{i}.lua").read_text() for i in includes]
    return redis.register_script("\n".join(filter(None, [shebang, *shared, body])))


def describe(exc: BaseException) -> str:
    """What went wrong, for a log line or a message: redis-py 8's repr() of
    its errors names only their kind (``network:ConnectionError``)."""
    return f"{type(exc).__name__}: {exc}"


class Backoff:
    """Exponential backoff across a Redis outage, logged once when it starts
    and once when it ends rather than on every failed try."""

    def __init__(self, log: logging.Logger, initial: float = 0.05, cap: float = 2.0) -> None:
        self._log = log
        self._initial = initial
        self._cap = cap
        self._delay = initial
        self.down = False

    async def wait(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            self._log.warning("redis unavailable, retrying with backoff: %s", describe(exc))
        await anyio.sleep(self._delay)
        self._delay = min(self._cap, self._delay * 2)

    def ok(self) -> None:
        if self.down:
            self._log.warning("redis reachable again")
            self.down = False
        self._delay = self._initial
