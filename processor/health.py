"""Liveness and readiness over HTTP, for container and orchestrator probes.

Each long-running service answers on a port of its own (``OCPP_HEALTH_PORT``,
or a free one if that is taken: :func:`listen`):

    GET /livez    200 {"alive": true} while its event loop runs
    GET /readyz   200 {"ready": true}
                  503 {"ready": false, "reason": "redis unreachable: ..."}

Other paths get 404, other methods than GET and HEAD 405. What "ready" means
is the service's :data:`~processor.types.Probe`; :func:`redis_probe` is the
one they use: Redis answers PING within a second and, for a processor, its
consumer group exists (a Redis that restarted empty has none until the
processor recreates it).

The app is raw ASGI, served by uvicorn inside the service's event loop as a
task of its task group: no access log (probes come every few seconds), no
logging set-up of uvicorn's own (the service's JSON lines stay as they are),
and no signal handlers (the service's SIGTERM handling stops it, once the
work in hand is done).
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Final

import anyio
import msgspec
import uvicorn
from redis.asyncio import Redis
from redis.exceptions import RedisError

from processor import keys
from processor.listening import bind, why
from processor.logs import redact
from processor.redis_io import TRANSIENT, describe, group_exists
from processor.types import ASGIApp, Probe, Receive, Scope, Send

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S: Final = 1.0
LIVEZ: Final = "/livez"
READYZ: Final = "/readyz"
_NOT_FOUND: Final = b'{"error":"not found"}'
_NOT_ALLOWED: Final = b'{"error":"method not allowed"}'
_encoder = msgspec.json.Encoder()


class Liveness(msgspec.Struct, kw_only=True):
    """The body of ``/livez``."""

    alive: bool


_ALIVE: Final = _encoder.encode(Liveness(alive=True))


class Readiness(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The body of ``/readyz``: ``reason`` says why when not ``ready``."""

    ready: bool
    reason: str = ""


def redis_probe(
    redis: Redis,
    *,
    group: str | None = None,
    stream: str = keys.INBOUND,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> Probe:
    """Ready when Redis answers PING within ``timeout_s`` and, if ``group``
    is given, that consumer group exists on ``stream``."""

    async def probe() -> str | None:
        try:
            with anyio.fail_after(timeout_s):
                await redis.ping()
                if group is not None and not await group_exists(redis, stream, group):
                    return f"consumer group {group} missing on {stream}"
        # Before TRANSIENT: the builtin TimeoutError is an OSError.
        except TimeoutError:
            return f"redis unreachable: no answer within {timeout_s:g} s"
        except TRANSIENT as exc:
            return f"redis unreachable: {exc}"
        except RedisError as exc:
            return f"redis error: {exc}"
        return None

    return probe


class ReadinessCheck:
    """Runs ``probe`` for each readiness request; logs when the answer
    changes rather than on every request."""

    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._ready: bool | None = None

    async def __call__(self) -> Readiness:
        try:
            reason = await self._probe()
        except Exception as exc:  # a bug in a probe is "not ready", not a dead server
            log.exception("readiness probe failed")
            reason = f"probe failed: {describe(exc)}"
        result = Readiness(ready=reason is None, reason=redact(reason or ""))
        if result.ready != self._ready:
            if result.ready:
                log.info("ready")
            else:
                log.warning("not ready: %s", result.reason)
            self._ready = result.ready
        return result


def health_app(probe: Probe) -> ASGIApp:
    """The ASGI app answering ``/livez`` and ``/readyz`` (see the module doc)."""
    check = ReadinessCheck(probe)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        head = method == "HEAD"
        if path not in (LIVEZ, READYZ):
            await _reply(send, 404, _NOT_FOUND, head)
        elif method not in ("GET", "HEAD"):
            await _reply(send, 405, _NOT_ALLOWED, head, ((b"allow", b"GET, HEAD"),))
        elif path == LIVEZ:
            await _reply(send, 200, _ALIVE, head)
        else:
            ready = await check()
            await _reply(send, 200 if ready.ready else 503, _encoder.encode(ready), head)

    return app


async def _reply(
    send: Send, status: int, body: bytes, head: bool, extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's handlers would replace the service's own and raise the
        # signal again once stopped; the service calls stop() instead.
        yield


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` or, if something already listens
    there, on a free port the OS picks on ``host`` (logged as a warning).

    Replicas started by hand or by systemd on one host all want the same
    default port, and a replica must not die for its probes: the one that
    finds the port taken serves them elsewhere and says where (and its entry
    in ``ocpp:instances`` does too). Any other failure (a low port without
    the right, an address the host does not have) is a setting to correct:
    SystemExit naming it."""
    try:
        return bind(host, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise _unusable(host, port, exc) from None
        taken = exc
    try:
        sock = bind(host, 0)
    except OSError as exc:
        raise _unusable(host, 0, exc) from None
    log.warning(
        "health port %d is taken on %s (%s), by another replica or another program: "
        "serving health probes on http://%s:%d instead",
        port, host, why(taken), host, sock.getsockname()[1],
    )  # fmt: skip
    return sock


def _unusable(host: str, port: int, exc: OSError) -> SystemExit:
    return SystemExit(
        f"cannot serve health probes on {host}:{port} ({why(exc)}); "
        "choose another OCPP_HEALTH_PORT, or 0 for none"
    )


class HealthServer:
    """Serves :func:`health_app` for ``probe`` on ``host:port`` from
    :meth:`run` until :meth:`stop`. Port 0 serves nothing: :meth:`run`
    returns at once.

    The constructor binds the port (see :func:`listen`: a port in use gives
    way to a free one, any other failure stops the service at start), so
    the probes answer before the service takes any work.
    """

    def __init__(self, probe: Probe, port: int, host: str = "0.0.0.0") -> None:
        self._socket = listen(host, port) if port else None
        self._server = _Server(
            uvicorn.Config(
                health_app(probe),
                interface="asgi3",
                http="h11",
                ws="none",
                lifespan="off",
                access_log=False,
                log_config=None,
                log_level="warning",
                proxy_headers=False,
                server_header=False,
                date_header=False,
                timeout_graceful_shutdown=1,
            )
        )

    @property
    def host(self) -> str:
        """The address listened on (``0.0.0.0``: every interface); empty if none."""
        return str(self._socket.getsockname()[0]) if self._socket else ""

    @property
    def port(self) -> int:
        """The port listened on, which may not be the one asked for; 0 if none."""
        return int(self._socket.getsockname()[1]) if self._socket else 0

    async def run(self) -> None:
        if self._socket is None:
            return
        host, port = self._socket.getsockname()[:2]
        log.info("health probes on http://%s:%d%s and %s", host, port, LIVEZ, READYZ)
        try:
            await self._server.serve(sockets=[self._socket])
        finally:
            self._socket.close()

    async def alongside(self, main: Callable[[], Awaitable[None]]) -> None:
        """Await ``main()`` with the probes answering; stop them after it."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.run)
            await main()
            self.stop()

    def stop(self) -> None:
        """Stop accepting, answer the requests in hand, return from :meth:`run`."""
        self._server.should_exit = True
