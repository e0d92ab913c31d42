"""``ocpp-api``: the central system over HTTP.

Send commands (the CALLs the central system starts) to chargers and follow
them, read what the processors know of chargers and connectors, keep the
authorization list, and read the history (transactions with their meter
values, charger events, past commands) that ocpp-archiver keeps in
PostgreSQL. A Litestar app served by uvicorn; every handler is async on one
redis.asyncio client and, for history, one asyncpg pool, both closed on
shutdown. History routes answer 503 while PostgreSQL is down or
``DATABASE_URL`` is not set; the rest do not need it. The OpenAPI
document is at ``/schema/openapi.json`` (and browsable at ``/schema``).
Errors are RFC 9457 problem details.

If ``OCPP_API_TOKEN`` is set, every ``/v1`` route wants
``Authorization: Bearer <token>``; ``/livez``, ``/readyz``, ``/healthz`` and
``/schema`` never do. An address refused 10 times within 60 s gets 429
(with ``Retry-After``) for 60 s, whatever token it sends. Without a token
the API listens on loopback only, unless ``OCPP_API_INSECURE`` is set.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar
from urllib.parse import parse_qsl, urlencode

import anyio
import msgspec
import uvicorn
from litestar import Litestar, MediaType, Request, Response, Router, delete, get, post, put
from litestar.datastructures import ResponseHeader, State
from litestar.exceptions import ClientException
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.params import (
    FromPath,
    HeaderParameter,
    JSONBody,
    PathParameter,
    QueryParameter,
    RawBody,
)
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from msgspec import Meta
from redis.exceptions import RedisError

from adapters import api_history as h
from adapters import api_queries as q
from adapters import api_telemetry
from adapters.api_models import (
    ChargePoint,
    ChargePointList,
    ChargerEventList,
    Command,
    CommandList,
    FrameList,
    Health,
    IdTag,
    IdTagBody,
    TransactionDetail,
    TransactionList,
    TransactionV201Detail,
    TransactionV201List,
)
from adapters.api_problems import (
    EXCEPTION_HANDLERS,
    INVALID,
    INVALID_OR_NOT_FOUND,
    NOT_FOUND,
    UNAUTHORIZED,
    UNAVAILABLE,
)
from adapters.api_security import (
    LOGIN_FAILURES,
    LOGIN_WINDOW_S,
    UnsafeSetting,
    bearer_guard,
    exposed,
    listen_host,
)
from adapters.app_state import history_of, queue_of, redis_of
from adapters.console.auth import Gate
from adapters.console.mount import console
from adapters.history_db import History, check_url, shown
from adapters.rate_limit import FailureLimiter
from processor import json_depth
from processor.command_queue import CommandQueue
from processor.commands import COMMANDS
from processor.health import Liveness, Readiness, ReadinessCheck, redis_probe
from processor.logs import setup
from processor.redis_io import connect, describe
from processor.settings import DefaultProtocol, LogLevel, RedisUrl, load
from processor.telemetry import Providers, configured, disabled

log = logging.getLogger("api")

HistoryUrl = Annotated[
    str,
    Meta(description="PostgreSQL to read history from (postgresql://...; empty: no history)"),
]


class ApiSettings(msgspec.Struct, kw_only=True, frozen=True):
    """HTTP API of the OCPP central system."""

    redis_url: RedisUrl = "redis://localhost:6379/0"
    database_url: HistoryUrl = ""
    api_host: Annotated[
        str,
        Meta(description="address to listen on (empty: 0.0.0.0 with a token, else 127.0.0.1)"),
    ] = ""
    api_port: Annotated[int, Meta(ge=1, le=65535, description="port to listen on")] = 8000
    api_token: Annotated[
        str,
        Meta(
            description="bearer token the /v1 routes require, 16 characters or more "
            "(empty: no authentication, and loopback only)"
        ),
    ] = ""
    api_insecure: Annotated[
        bool,
        Meta(description="allow a non-loopback OCPP_API_HOST without a token (anyone can command)"),
    ] = False
    reply_ttl_s: Annotated[
        int, Meta(ge=1, description="expiry of a charger's reply list (ocpp:responses:{id})")
    ] = 300
    command_retention_s: Annotated[
        int, Meta(ge=1, description="how long a command's record is kept")
    ] = 7 * 86400
    default_protocol: DefaultProtocol = "ocpp1.6"
    console_offline_after_s: Annotated[
        int,
        Meta(
            ge=10,
            description="the console shows a charger online while it was heard from "
            "within this (two heartbeat intervals and some slack)",
        ),
    ] = 660
    log_level: LogLevel = "INFO"


# --- handlers ----------------------------------------------------------------


_COMMAND_BODY = RequestBody(
    content={
        "application/json": OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.OBJECT,
                description="the action's OCPP 1.6 request payload, camelCase as in the "
                "OCPP-J CALL; an empty body means {}",
            )
        )
    },
    description="the OCPP request payload",
    required=False,
)


@dataclass
class _CommandOperation(Operation):
    """The command route takes its body raw (it is validated per action), so
    its OpenAPI request body is described here."""

    def __post_init__(self) -> None:
        self.request_body = _COMMAND_BODY


Action = Annotated[
    str,
    PathParameter(
        description="an action the central system sends, of the charger's OCPP version"
        " (1.6 or 2.0.1: the one its BootNotification came in)",
        schema_extra={"enum": sorted(set().union(*COMMANDS.values()))},
    ),
]


@post(
    "/charge-points/{charge_point_id:str}/commands/{action:str}",
    status_code=HTTP_202_ACCEPTED,
    operation_class=_CommandOperation,
    responses={
        200: ResponseSpec(Command, description="the command has an outcome"),
        **INVALID_OR_NOT_FOUND,
    },
    response_description="the command is queued or sent; follow Location for its outcome",
    response_headers=[
        ResponseHeader(name="Location", description="the command (on 202)", documentation_only=True)
    ],
)
async def send_command(
    state: State,
    charge_point_id: FromPath[str],
    action: Action,
    body: RawBody,
    wait: Annotated[
        float,
        QueryParameter(ge=0, le=q.MAX_WAIT_S, description="seconds to wait for the outcome"),
    ] = 0.0,
    timeout: Annotated[  # noqa: ASYNC109 (the command's deadline, not this call's)
        float,
        QueryParameter(gt=0, le=q.MAX_TIMEOUT_S, description="seconds the charger has to answer"),
    ] = 30.0,
    traceparent: Annotated[str | None, HeaderParameter(name="traceparent", required=False)] = None,
) -> Response[Command]:
    """Send an OCPP command to a charger: 200 with its outcome if it has one
    (within ``wait`` seconds), else 202 with the command as it stands."""
    command = await q.send_command(
        redis_of(state), queue_of(state), charge_point_id, action, body,
        timeout_s=timeout, wait_s=wait, traceparent=traceparent or "",
    )  # fmt: skip
    if q.is_finished(command):
        return Response(command, status_code=HTTP_200_OK)
    location = f"/v1/commands/{command.command_id}"
    return Response(command, status_code=HTTP_202_ACCEPTED, headers={"Location": location})


@get("/commands/{command_id:str}", responses={**NOT_FOUND, **UNAVAILABLE})
async def get_command(state: State, command_id: FromPath[str]) -> Command:
    """A command and its outcome: from Redis while it keeps it, then from
    the history."""
    return await h.get_command(history_of(state), queue_of(state), command_id)


Limit = Annotated[int, QueryParameter(ge=1, le=q.MAX_LIMIT, description="page size")]
Cursor = Annotated[
    str | None,
    QueryParameter(required=False, description="next_before of the previous page (paging)"),
]


def _time(description: str, name: str | None = None) -> Any:
    return QueryParameter(
        required=False, name=name, description=f"{description} (RFC 3339)",
        schema_extra={"format": "date-time"},
    )  # fmt: skip


# The filters both versions' transaction listings take.
ChargerFilter = Annotated[
    str | None, QueryParameter(required=False, description="only this charger's")
]
Active = Annotated[
    bool | None,
    QueryParameter(required=False, description="true: only running; false: only finished"),
]
StartedFrom = Annotated[str | None, _time("only those started at or after this")]
StartedTo = Annotated[str | None, _time("only those started before this")]


@get("/commands", responses={**INVALID, **UNAUTHORIZED, **UNAVAILABLE})
async def list_commands(
    state: State,
    charge_point_id: Annotated[str, QueryParameter(description="the charger's")],
    limit: Limit = 100,
    before: Cursor = None,
) -> CommandList:
    """A charger's commands from the history, newest first."""
    return await h.list_commands(history_of(state), charge_point_id, limit=limit, before=before)


@get("/charge-points", responses=UNAUTHORIZED)
async def list_charge_points(state: State) -> ChargePointList:
    """Every charger that booted."""
    return await q.list_charge_points(redis_of(state))


@get("/charge-points/{charge_point_id:str}", responses=NOT_FOUND)
async def get_charge_point(state: State, charge_point_id: FromPath[str]) -> ChargePoint:
    """A charger's boot information, connectors and configuration."""
    return await q.get_charge_point(redis_of(state), charge_point_id)


@get("/charge-points/{charge_point_id:str}/frames", responses=NOT_FOUND)
async def get_frames(state: State, charge_point_id: FromPath[str]) -> FrameList:
    """The charger's last OCPP frames, both ways, newest first. Those of our
    commands are always kept; the rest only while someone watches the
    charger, as this read does for the next ten minutes."""
    return await q.charger_frames(redis_of(state), charge_point_id)


CSV = "text/csv"


@dataclass
class _TransactionsOperation(Operation):
    """The listing also answers in CSV (``Accept: text/csv``)."""

    columns: ClassVar[Sequence[str]] = h.CSV_COLUMNS

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if ok is not None and not isinstance(ok, Reference) and ok.content is not None:
            ok.content[CSV] = OpenAPIMediaType(
                schema=Schema(type=OpenAPIType.STRING, description="a header row, then one "
                              f"row per transaction: {', '.join(self.columns)}")
            )  # fmt: skip


class _SessionsOperation(_TransactionsOperation):
    columns = h.SESSION_CSV_COLUMNS


def _next_page(request: Request[Any, Any, Any], before: int) -> str:
    """The request's own URL with the next page's cursor: a Link header's."""
    given = parse_qsl(request.url.query, keep_blank_values=True)
    query = [(k, v) for k, v in given if k != "before"]
    return f'<{request.url.path}?{urlencode([*query, ("before", before)])}>; rel="next"'


@get(
    "/transactions",
    responses={**INVALID, **UNAUTHORIZED, **UNAVAILABLE},
    operation_class=_TransactionsOperation,
    response_headers=[
        ResponseHeader(name="Link", description='the next page, rel="next", when there is one',
                       documentation_only=True)
    ],
)  # fmt: skip
async def list_transactions(
    state: State,
    request: Request[Any, Any, Any],
    charge_point_id: ChargerFilter = None,
    id_tag: Annotated[
        str | None, QueryParameter(required=False, description="only those started with this idTag")
    ] = None,
    active: Active = None,
    started_from: StartedFrom = None,
    started_to: StartedTo = None,
    limit: Limit = 100,
    before: Annotated[
        int | None,
        QueryParameter(ge=1, required=False, description="only ids below this (paging)"),
    ] = None,
) -> Response[TransactionList]:
    """Transactions from the history, newest first; CSV with ``Accept: text/csv``."""
    page = await h.list_transactions(
        history_of(state), charge_point_id=charge_point_id, id_tag=id_tag, active=active,
        started_from=h.parse_time("started_from", started_from),
        started_to=h.parse_time("started_to", started_to), limit=limit, before=before,
    )  # fmt: skip
    headers = {}
    if page.next_before is not None:
        headers["Link"] = _next_page(request, page.next_before)
    if request.accept.best_match([MediaType.JSON, CSV], MediaType.JSON) == CSV:
        text: Any = h.transactions_csv(page.transactions)
        return Response(text, media_type=CSV, headers=headers)
    return Response(page, headers=headers)


@get("/transactions/{transaction_id:int}", responses={**NOT_FOUND, **UNAVAILABLE})
async def get_transaction(state: State, transaction_id: FromPath[int]) -> TransactionDetail:
    """A transaction and its meter values, in time order."""
    return await h.get_transaction(history_of(state), redis_of(state), transaction_id)


@get(
    "/v201/transactions",
    responses={**INVALID, **UNAUTHORIZED, **UNAVAILABLE},
    operation_class=_SessionsOperation,
)
async def list_sessions(
    state: State,
    request: Request[Any, Any, Any],
    charge_point_id: ChargerFilter = None,
    id_token: Annotated[
        str | None, QueryParameter(required=False, description="only those with this idToken")
    ] = None,
    active: Active = None,
    started_from: StartedFrom = None,
    started_to: StartedTo = None,
    limit: Limit = 100,
    before: Cursor = None,
) -> Response[TransactionV201List]:
    """OCPP 2.0.1 sessions from the history, latest started first; CSV with
    ``Accept: text/csv``. (1.6 transactions are at ``/v1/transactions``:
    their ids are ours and numeric, 2.0.1's the station's text.)"""
    page = await h.list_sessions(
        history_of(state), charge_point_id=charge_point_id, id_token=id_token, active=active,
        started_from=h.parse_time("started_from", started_from),
        started_to=h.parse_time("started_to", started_to), limit=limit, before=before,
    )  # fmt: skip
    if request.accept.best_match([MediaType.JSON, CSV], MediaType.JSON) == CSV:
        text: Any = h.sessions_csv(page.transactions)
        return Response(text, media_type=CSV)
    return Response(page)


@get(
    "/v201/transactions/{charge_point_id:str}/{transaction_id:str}",
    responses={**NOT_FOUND, **UNAVAILABLE},
)
async def get_session(
    state: State, charge_point_id: FromPath[str], transaction_id: FromPath[str]
) -> TransactionV201Detail:
    """An OCPP 2.0.1 session: its events in seqNo order, its meter values in time order."""
    return await h.get_session(history_of(state), redis_of(state), charge_point_id, transaction_id)


@get(
    "/charge-points/{charge_point_id:str}/events",
    responses={**INVALID, **UNAUTHORIZED, **UNAVAILABLE},
)
async def list_events(
    state: State,
    charge_point_id: FromPath[str],
    kind: Annotated[
        str | None, QueryParameter(required=False, description="only this kind (boot, status, ...)")
    ] = None,
    occurred_from: Annotated[str | None, _time("only those at or after this", "from")] = None,
    occurred_to: Annotated[str | None, _time("only those before this", "to")] = None,
    limit: Limit = 100,
    before: Cursor = None,
) -> ChargerEventList:
    """A charger's events from the history (boots, status changes,
    notifications, security events), newest first."""
    return await h.list_events(
        history_of(state), charge_point_id, kind=kind,
        occurred_from=h.parse_time("from", occurred_from),
        occurred_to=h.parse_time("to", occurred_to), limit=limit, before=before,
    )  # fmt: skip


IdTagPath = Annotated[str, PathParameter(min_length=1, max_length=20, description="the idTag")]


@get("/id-tags/{id_tag:str}", responses=INVALID_OR_NOT_FOUND)
async def get_id_tag(state: State, id_tag: IdTagPath) -> IdTag:
    """An authorization list entry."""
    return await q.get_id_tag(redis_of(state), id_tag)


@put(
    "/id-tags/{id_tag:str}",
    responses={201: ResponseSpec(IdTag, description="created"), **INVALID, **UNAUTHORIZED},
    response_description="replaced",
)
async def put_id_tag(state: State, id_tag: IdTagPath, data: JSONBody[IdTagBody]) -> Response[IdTag]:
    """Create or replace an authorization list entry."""
    entry, created = await q.put_id_tag(redis_of(state), id_tag, data)
    return Response(entry, status_code=HTTP_201_CREATED if created else HTTP_200_OK)


@delete("/id-tags/{id_tag:str}", responses=INVALID_OR_NOT_FOUND)
async def delete_id_tag(state: State, id_tag: IdTagPath) -> None:
    """Remove an entry from the authorization list."""
    await q.delete_id_tag(redis_of(state), id_tag)


@get(
    "/healthz",
    responses={503: ResponseSpec(Health, description="Redis does not answer")},
)
async def healthz(state: State) -> Response[Health]:
    """Whether Redis answers PING (no authentication)."""
    try:
        with anyio.fail_after(2):
            await redis_of(state).ping()
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("health check: redis does not answer: %s", describe(exc))
        return Response(Health(status="unavailable"), status_code=503)
    return Response(Health(status="ok"))


@get("/livez")
async def livez() -> Liveness:
    """Alive while the server runs, whether Redis answers or not (no authentication)."""
    return Liveness(alive=True)


@get("/readyz", responses={503: ResponseSpec(Readiness, description="not ready, and why")})
async def readyz(state: State) -> Response[Readiness]:
    """Ready when Redis answers PING within a second (no authentication)."""
    check: ReadinessCheck = state.readiness
    ready = await check()
    return Response(ready, status_code=HTTP_200_OK if ready.ready else 503)


V1_HANDLERS = [
    send_command,
    get_command,
    list_commands,
    list_charge_points,
    get_charge_point,
    get_frames,
    list_transactions,
    get_transaction,
    list_sessions,
    get_session,
    list_events,
    get_id_tag,
    put_id_tag,
    delete_id_tag,
]


def _operation_id(handler: Any, method: Any, path: Any) -> str:
    name: str = handler.handler_name
    return name


def create_app(
    settings: ApiSettings,
    providers: Providers | None = None,
    *,
    login_limiter: FailureLimiter | None = None,
) -> Litestar:
    """The app; its telemetry goes to ``providers`` (none by default: then
    no request does any telemetry work), and refused logins are counted by
    ``login_limiter`` (by default one of api_security's limits on the
    monotonic clock). Raises ValueError, quoting none of it, for a
    ``database_url`` that is not a PostgreSQL URL."""
    telemetry = providers or disabled()
    # A DATABASE_URL that does not parse is refused here, before serving.
    history = History(settings.database_url)

    @asynccontextmanager
    async def clients(app: Litestar) -> AsyncIterator[None]:
        # Neither connects here: the API starts whether Redis and
        # PostgreSQL answer or not.
        app.state.history = await history.open()
        redis = connect(settings.redis_url)
        app.state.redis = redis
        app.state.queue = CommandQueue(
            redis, reply_ttl_s=settings.reply_ttl_s, retention_s=settings.command_retention_s,
            tracer_provider=telemetry.tracer_provider, default_protocol=settings.default_protocol,
        )  # fmt: skip
        app.state.readiness = ReadinessCheck(redis_probe(redis))
        try:
            yield
        finally:
            await redis.aclose()
            await history.close()

    auth = bool(settings.api_token)
    # One limiter for /v1 and the console's login: guessing through either counts.
    if login_limiter is None:  # not `or`: an empty limiter is falsy (it has a len)
        login_limiter = FailureLimiter(LOGIN_FAILURES, LOGIN_WINDOW_S)
    operator_console = console(Gate(settings.api_token, login_limiter),
                               offline_after_s=settings.console_offline_after_s)  # fmt: skip
    v1 = Router(
        "/v1",
        route_handlers=V1_HANDLERS,
        guards=[bearer_guard(settings.api_token, login_limiter)] if auth else None,
        security=[{"bearer": []}] if auth else None,
        # Only /v1: health checks and the schema make no spans.
        middleware=[api_telemetry.request_spans(telemetry)] if telemetry.enabled else None,
        # Only /v1 routes take bodies; health checks read none.
        before_request=bounded_body,
    )
    return Litestar(
        route_handlers=[v1, livez, readyz, healthz, *operator_console.routers],
        lifespan=[clients],
        template_config=operator_console.template_config,
        state=State(operator_console.state),
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=OpenAPIConfig(
            title="OCPP 1.6 central system",
            version="1",
            description=__doc__,
            operation_id_creator=_operation_id,
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")}
                if auth
                else None
            ),
        ),
        logging_config=None,
        request_max_body_size=q.MAX_BODY_BYTES,
    )


_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})


async def bounded_body(request: Request[Any, Any, Any]) -> None:
    """Refuse a body nested too deeply for a decoder before any route's
    parameters are decoded: msgspec would raise RecursionError (a 500)."""
    if request.method not in _WITH_BODY:
        return
    body = await request.body()
    if body and not json_depth.within(body):
        raise ClientException(f"the body nests deeper than {json_depth.MAX_DEPTH} levels")


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> None:
    settings = load(ApiSettings, argv, prog="ocpp-api")
    setup(settings.log_level, "api")
    try:
        check_url(settings.database_url)
    except ValueError as exc:
        sys.exit(f"ocpp-api: {exc}")
    try:
        host = listen_host(settings.api_host, settings.api_token, settings.api_insecure)
    except UnsafeSetting as exc:
        # One line, exit 2: as argparse refuses any other setting.
        print(f"ocpp-api: error: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    auth = "on" if settings.api_token else "off, loopback only"
    if exposed(host, settings.api_token):
        auth = "OFF"
        # (Not "token:": the log redacts what follows that.)
        log.warning("OCPP_API_INSECURE is set and there is no OCPP_API_TOKEN, so anyone who "
                    "can reach %s:%d can send commands to chargers", host,
                    settings.api_port)  # fmt: skip
    history = shown(settings.database_url) if settings.database_url else "off (no DATABASE_URL)"
    log.info("api listening on %s:%d (authentication %s, history %s)", host, settings.api_port,
             auth, history)  # fmt: skip
    # uvicorn stops on SIGTERM or SIGINT: no new connections, requests in
    # hand finished, then the lifespan closes the Redis client. It then
    # raises the signal again for the handler it found: this one makes that
    # (or a signal before it started serving) a clean exit 0, as the other
    # services do, out through configured(), which flushes telemetry.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    with configured("ocpp-api") as providers:
        uvicorn.run(
            create_app(settings, providers),
            host=host,
            port=settings.api_port,
            log_config=None,
            log_level=settings.log_level.lower(),
            server_header=False,
            # The client is the peer: uvicorn would otherwise take it from
            # X-Forwarded-For sent from 127.0.0.1, and a client there could
            # pick a new address for every guess at the token.
            proxy_headers=False,
        )


if __name__ == "__main__":
    main()
