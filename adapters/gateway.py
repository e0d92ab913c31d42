"""``ocpp-gateway``: an OCPP-J WebSocket server (OCPP 1.6 and 2.0.1) that keeps
the ws-server's wire contract (CONTRACT.md), so the system runs without the
user's server.

A charge point connects to ``ws[s]://host:8080/{chargePointId}`` offering the
``ocpp2.0.1`` or the ``ocpp1.6`` subprotocol (offering both, it gets the
first it lists). Every text frame it sends is LPUSHed onto
``ocpp:requests`` as an envelope (``adapters/gateway_inbound.py``: garbage
is forwarded too, with what could be read of it) whose ``protocol`` says
which it chose; every envelope LPUSHed onto
``ocpp:responses:{id}`` is popped from the right and its ``payload`` written
to that charger's socket, in order (``adapters/gateway_outbound.py``: one
pump fed by Redis client-tracking invalidations, so thousands of chargers
share three Redis connections). Envelopes queued before a charger connects
are delivered when it does.

Handshake, in order:

* a path that is not ``/{id}`` gets HTTP 404, an identity outside OCPP's
  ``identifierString`` rules (``adapters/gateway_auth.py``) HTTP 400;
* with ``OCPP_GATEWAY_BASIC_AUTH`` set to a file of ``id:password`` lines,
  a request whose Basic credentials are not that charger's gets HTTP 401
  (security profile 1; with TLS, profile 2), and a source that failed
  ``OCPP_GATEWAY_AUTH_MAX_FAILURES`` times within
  ``OCPP_GATEWAY_AUTH_WINDOW_S`` gets HTTP 429 with ``Retry-After``,
  credentials unchecked, for that long (``adapters/rate_limit.py``);
* a client offering neither subprotocol gets what OCPP-J 1.6 section 3.1.2
  prescribes: the handshake completes without a ``Sec-WebSocket-Protocol``
  header and the connection is closed at once, with 1002 (protocol error).

Then: a new connection for an identity replaces the older one, which is
closed with 1000 and hands over what it had not sent; a frame over
``OCPP_GATEWAY_MAX_FRAME_BYTES`` closes the connection with 1009; a binary
frame closes it with 1003 (OCPP-J is text); keepalive pings go out every
``OCPP_GATEWAY_PING_INTERVAL_S`` and a peer that does not answer one within
as long is dropped. TLS is on when ``OCPP_GATEWAY_TLS_CERT`` and
``OCPP_GATEWAY_TLS_KEY`` name PEM files. SIGTERM stops accepting, closes
every connection with 1001, pushes what was received, puts back what was not
sent, and exits 0.

One gateway per charger identity: two processes both holding a connection
for the same charger would split its replies between them.

Without ``OCPP_GATEWAY_BASIC_AUTH``, a gateway listening beyond loopback
warns at start: anyone who can reach the port can connect as any charger.
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
from collections.abc import Sequence
from typing import Annotated, Final

import anyio
import msgspec
from msgspec import Meta
from redis.asyncio import Redis
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from adapters import gateway_metrics
from adapters.gateway_auth import Credentials, PathRefused, identity, tls_context
from adapters.gateway_inbound import Forwarder, envelope, received_now
from adapters.gateway_outbound import Notifier, Pump, Session
from adapters.rate_limit import FailureLimiter, LogBudget, client_key
from processor.health import HealthServer, redis_probe
from processor.instances import registered
from processor.lifecycle import run_until_signalled
from processor.listening import bind, loopback, why
from processor.logs import setup
from processor.redis_io import connect
from processor.settings import HealthPort, LogLevel, RedisUrl, load
from processor.telemetry import Providers, configured

log = logging.getLogger("gateway")

# The envelope's ``protocol`` is the subprotocol's name: the processor's
# names for the versions (processor/protocols.py) are the same.
SUBPROTOCOLS: Final = (Subprotocol("ocpp1.6"), Subprotocol("ocpp2.0.1"))
# Per connection at shutdown, then for pushing and requeueing what is left.
CLOSE_TIMEOUT_S: Final = 5.0
DRAIN_S: Final = 5.0


class GatewaySettings(msgspec.Struct, kw_only=True, frozen=True):
    """OCPP-J 1.6 and 2.0.1 WebSocket gateway keeping the ws-server's Redis contract."""

    gateway_host: Annotated[str, Meta(description="address to listen on")] = "0.0.0.0"
    gateway_port: Annotated[int, Meta(ge=0, le=65535, description="port to listen on")] = 8080
    gateway_max_frame_bytes: Annotated[
        int, Meta(ge=256, description="a larger frame closes the connection with 1009")
    ] = 65536
    gateway_ping_interval_s: Annotated[
        float, Meta(ge=0, description="keepalive ping interval and pong timeout (s); 0: off")
    ] = 30
    gateway_basic_auth: Annotated[
        str, Meta(description="file of id:password lines for HTTP Basic auth; empty: off")
    ] = ""
    gateway_tls_cert: Annotated[
        str, Meta(description="PEM certificate chain for wss://; empty: plain ws://")
    ] = ""
    gateway_tls_key: Annotated[str, Meta(description="PEM private key of the certificate")] = ""
    gateway_auth_max_failures: Annotated[
        int,
        Meta(
            ge=0,
            description="failed Basic-auth logins from one source before it is refused; 0: off",
        ),
    ] = 10
    gateway_auth_window_s: Annotated[
        float,
        Meta(
            gt=0,
            description="window (s) failures are counted in, and how long a source is refused",
        ),
    ] = 60
    gateway_requeue_ttl_s: Annotated[
        int, Meta(ge=1, description="expiry given to a reply list unsent frames went back to")
    ] = 300
    redis_url: RedisUrl = "redis://localhost:6379/0"
    health_port: HealthPort = 9103
    log_level: LogLevel = "INFO"


def _select_subprotocol(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    # The charger's preference: the first it offers that we speak. None
    # completes the handshake without the header; the handler closes.
    return next((p for p in offered if p in SUBPROTOCOLS), None)


class Gateway:
    """The WebSocket server and its three tasks: forwarder, pump, notifier."""

    def __init__(
        self,
        settings: GatewaySettings,
        redis: Redis,
        credentials: Credentials | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._tls = tls
        # None: the limit is off (OCPP_GATEWAY_AUTH_MAX_FAILURES=0).
        self._logins = (
            FailureLimiter(settings.gateway_auth_max_failures, settings.gateway_auth_window_s)
            if settings.gateway_auth_max_failures > 0
            else None
        )
        self._refusals = LogBudget()
        self.pump = Pump(redis, requeue_ttl_s=settings.gateway_requeue_ttl_s)
        self.forwarder = Forwarder(redis)
        self.notifier = Notifier(settings.redis_url, self.pump)
        self._stop = anyio.Event()
        self._socket = _chargers_socket(settings.gateway_host, settings.gateway_port)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Serve until :meth:`stop`, then close connections and drain."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.forwarder.run)
            tg.start_soon(self.pump.run)
            tg.start_soon(self.notifier.run)
            try:
                await self._serve()
            finally:
                self.notifier.stop()
                self.pump.stop()
                self.forwarder.close()
                # Past this, a Redis outage would hold the exit forever.
                tg.cancel_scope.deadline = anyio.current_time() + DRAIN_S

    async def _serve(self) -> None:
        s = self._settings
        ping = s.gateway_ping_interval_s or None
        async with serve(
            self._handle,
            sock=self._socket,
            process_request=self._check_request,
            select_subprotocol=_select_subprotocol,
            max_size=s.gateway_max_frame_bytes,
            ping_interval=ping,
            ping_timeout=ping,
            close_timeout=CLOSE_TIMEOUT_S,
            compression=None,  # chargers rarely ask; zlib state per socket costs memory
            ssl=self._tls,
        ) as server:
            where = ", ".join(str(sock.getsockname()[:2]) for sock in server.sockets)
            log.info("listening on %s (%s)", where, "wss" if self._tls else "ws")
            if self._credentials is None and not all(
                loopback(sock.getsockname()[0]) for sock in server.sockets
            ):
                log.warning(
                    "OCPP_GATEWAY_BASIC_AUTH is not set and the gateway listens on %s, beyond "
                    "loopback: anyone who can reach the port can connect as any charger. "
                    "Set OCPP_GATEWAY_BASIC_AUTH (with TLS), or listen on 127.0.0.1 behind "
                    "a proxy that authenticates chargers",
                    where,
                )
            await self._stop.wait()
            log.info("closing %d connections", len(self.pump.sessions))
            server.close(close_connections=True, code=CloseCode.GOING_AWAY)
            await server.wait_closed()

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            cp = identity(request.path)
        except PathRefused as exc:
            log.info("refused path %r: %s", request.path[:100], exc)
            return connection.respond(exc.status, f"{exc}\n")
        if self._credentials is not None:
            return self._check_credentials(connection, request, cp, self._credentials)
        return None

    def _check_credentials(
        self, connection: ServerConnection, request: Request, cp: str, credentials: Credentials
    ) -> Response | None:
        host = str(connection.remote_address[0]) if connection.remote_address else ""
        key = client_key(host)
        wait = self._logins.retry_after(key) if self._logins is not None else 0.0
        if wait > 0:
            # 429, not 401: the password may well be right (a neighbour
            # behind the same NAT failing), and a charger told 401 may flag
            # it as wrong; proxies pass 429 on and mark no backend down.
            seconds = math.ceil(wait)
            self._warn("refused %s from %s: too many failed logins from there; retry after %d s",
                       cp, host, seconds)  # fmt: skip
            response = connection.respond(429, "too many failed logins\n")
            response.headers["Retry-After"] = str(seconds)
            return response
        headers = request.headers.get_all("Authorization")
        why = credentials.check(cp, headers[0] if len(headers) == 1 else None)
        if why is None:
            return None
        self._warn("refused %s from %s: %s", cp, host, why)
        if self._logins is not None and self._logins.failed(key).blocked:
            limit = self._logins
            self._warn("%s: %d failed logins within %g s; refusing it for %g s",
                       key, limit.limit, limit.window_s, limit.window_s)  # fmt: skip
        response = connection.respond(401, "unauthorized\n")
        response.headers["WWW-Authenticate"] = 'Basic realm="OCPP", charset="UTF-8"'
        return response

    def _warn(self, message: str, *args: object) -> None:
        # Never the Authorization header or the password: the charger id
        # comes from the path, already checked to be an identity.
        held = self._refusals.take()
        if held is None:
            return
        if held:
            message += " (%d such lines left out before this one)"
            args = (*args, held)
        log.warning(message, *args)

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        cp = identity(ws.request.path)
        protocol = ws.subprotocol
        if protocol not in SUBPROTOCOLS:
            wanted = " or ".join(SUBPROTOCOLS)
            log.info("refused %s: it offered no %s subprotocol", cp, wanted)
            await ws.close(CloseCode.PROTOCOL_ERROR, f"the {wanted} subprotocol is required")
            return
        session = Session(cp, ws)
        self.pump.attach(session)
        log.info("%s connected from %s (%s)", cp, ws.remote_address, protocol)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(session.send_loop, self.pump.mark)
                tg.start_soon(self._close_when_replaced, ws, session)
                await self._receive(ws, cp, protocol)
                tg.cancel_scope.cancel()
        finally:
            self.pump.detach(session)
            log.info("%s disconnected (%s %s)", cp, ws.close_code, ws.close_reason or "")

    async def _close_when_replaced(self, ws: ServerConnection, session: Session) -> None:
        # Not after the sender's current write: a dead peer could hold that.
        await session.wait_replaced()
        log.info("%s: replaced by a newer connection", session.charge_point_id)
        await ws.close(CloseCode.NORMAL_CLOSURE, "replaced by a newer connection")

    async def _receive(self, ws: ServerConnection, cp: str, protocol: str) -> None:
        while True:
            try:
                message = await ws.recv()
            except ConnectionClosed:
                return
            received = received_now()
            if isinstance(message, bytes):
                await ws.close(CloseCode.UNSUPPORTED_DATA, "OCPP-J frames are text")
                return
            await self.forwarder.send(envelope(cp, message.encode(), received, protocol))


def _chargers_socket(host: str, port: int) -> socket.socket:
    # Bound here, before the service's task groups: a port in use (another
    # gateway on the host) stops it with one line, not a traceback.
    try:
        return bind(host, port)
    except OSError as exc:
        raise SystemExit(
            f"ocpp-gateway: cannot listen for chargers on {host}:{port} ({why(exc)}); "
            "choose another OCPP_GATEWAY_PORT"
        ) from None


async def serve_gateway(
    settings: GatewaySettings,
    credentials: Credentials | None,
    tls: ssl.SSLContext | None,
    providers: Providers | None = None,
) -> None:
    """Run the gateway until SIGTERM or SIGINT. Metrics go to ``providers``
    (none by default)."""
    redis = connect(settings.redis_url)
    gateway = Gateway(settings, redis, credentials, tls)
    if providers is not None and providers.enabled:
        gateway_metrics.observe(providers.meter_provider, gateway.pump, gateway.forwarder)
    health = HealthServer(redis_probe(redis), settings.health_port)

    async def run() -> None:
        await registered(redis, "gateway", health, gateway.run)

    try:
        await run_until_signalled(run, gateway.stop, log)
    finally:
        await redis.aclose()
    log.info("gateway stopped after forwarding %d frames", gateway.forwarder.forwarded)


def main(argv: Sequence[str] | None = None) -> None:
    settings = load(GatewaySettings, argv, prog="ocpp-gateway")
    setup(settings.log_level, "gateway")
    # Our own lines say who connected and why a request was refused.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    if bool(settings.gateway_tls_cert) != bool(settings.gateway_tls_key):
        raise SystemExit("ocpp-gateway: set both OCPP_GATEWAY_TLS_CERT and OCPP_GATEWAY_TLS_KEY")
    try:
        credentials = (
            Credentials(settings.gateway_basic_auth) if settings.gateway_basic_auth else None
        )
        tls = (
            tls_context(settings.gateway_tls_cert, settings.gateway_tls_key)
            if settings.gateway_tls_cert
            else None
        )
    except (OSError, ValueError, ssl.SSLError) as exc:
        raise SystemExit(f"ocpp-gateway: {exc}") from None
    # It makes no spans yet: no exporter process to keep idle (offload=False).
    with configured("ocpp-gateway", offload=False) as providers:
        anyio.run(serve_gateway, settings, credentials, tls, providers, backend="asyncio")


if __name__ == "__main__":
    main()
