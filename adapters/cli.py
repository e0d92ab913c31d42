"""``ocpp-cli``: what the HTTP API does, from a terminal, straight on Redis
and, for history, on PostgreSQL (``DATABASE_URL``).

It uses the same CommandQueue and the same reads and writes as the API
(``adapters/api_queries.py``, ``adapters/api_history.py``) and prints the
same JSON (``transactions --csv``: the same CSV). Exit codes: 0 done,
1 not found, 2 invalid input, 3 Redis or PostgreSQL unavailable (or, for
history, ``DATABASE_URL`` not set). ``probe`` is the exception: a container
health check for images without curl, it exits 0 when a URL answers 2xx
and 1 otherwise (Docker reserves 2).

    ocpp-cli send CP42 Reset '{"type": "Soft"}' --wait 10
    ocpp-cli charge-point CP42
    ocpp-cli transactions --charge-point CP42 --active
    ocpp-cli transactions --started-from 2024-01-01T00:00:00Z --csv > january.csv
    ocpp-cli v201-transactions --charge-point CP201 --active
    ocpp-cli events CP42 --kind status
    ocpp-cli id-tag put RFID123 Accepted --expiry-date 2030-01-01T00:00:00Z
    ocpp-cli instances
    ocpp-cli probe http://127.0.0.1:9101/readyz
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import anyio
import msgspec
from msgspec import Meta
from opentelemetry import trace
from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapters import api_history as h
from adapters import api_queries as q
from adapters.history_db import History, HistoryUnavailable
from processor import instances, keys
from processor.command_queue import CommandQueue
from processor.logs import setup
from processor.redis_io import connect, describe, group_exists
from processor.settings import DefaultProtocol, RedisUrl, env_name
from processor.telemetry import Providers, configured, disabled
from processor.trace_context import tracing

OK, NOT_FOUND, INVALID, UNAVAILABLE = 0, 1, 2, 3


class CliSettings(msgspec.Struct, kw_only=True, frozen=True):
    """What the CLI takes from the environment (the same names as the API)."""

    redis_url: RedisUrl = "redis://localhost:6379/0"
    database_url: str = ""
    reply_ttl_s: Annotated[int, Meta(ge=1)] = 300
    command_retention_s: Annotated[int, Meta(ge=1)] = 7 * 86400
    default_protocol: DefaultProtocol = "ocpp1.6"


def _settings(
    environ: Mapping[str, str], redis_url: str | None, database_url: str | None = None
) -> CliSettings:
    values = {
        f.name: environ[env_name(f.name)]
        for f in msgspec.structs.fields(CliSettings)
        if env_name(f.name) in environ
    }
    if redis_url is not None:
        values["redis_url"] = redis_url
    if database_url is not None:
        values["database_url"] = database_url
    try:
        return msgspec.convert(values, CliSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise q.InvalidInput(f"invalid setting: {exc}") from None


def _time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None


def _paging(s: argparse.ArgumentParser, metavar: str, kind: type, text: str) -> None:
    s.add_argument("--limit", type=int, default=100, help=f"at most this many (max {q.MAX_LIMIT})")
    s.add_argument("--before", type=kind, metavar=metavar, help=f"{text} (paging)")


def _transaction_filters(s: argparse.ArgumentParser) -> None:
    """The filters both versions' transaction listings take."""
    state = s.add_mutually_exclusive_group()
    state.add_argument("--active", action="store_const", const=True, dest="active",
                       help="only running ones")  # fmt: skip
    state.add_argument("--finished", action="store_const", const=False, dest="active",
                       help="only finished ones")  # fmt: skip
    s.add_argument("--started-from", type=_time, metavar="RFC3339",
                   help="only those started at or after this")  # fmt: skip
    s.add_argument("--started-to", type=_time, metavar="RFC3339",
                   help="only those started before this")  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ocpp-cli",
        description="Send commands to chargers and read the central system's state in Redis "
        "and its history in PostgreSQL.",
        epilog="exit codes: 0 done, 1 not found, 2 invalid input, 3 Redis or PostgreSQL "
        "unavailable, or DATABASE_URL not set for a history command (probe: 0 or 1)",
    )
    p.add_argument(
        "--redis-url", help="Redis to use [env REDIS_URL, default redis://localhost:6379/0]"
    )
    p.add_argument(
        "--database-url",
        help="PostgreSQL to read history from (transactions, transaction, events, commands, "
        "and command once Redis dropped it) [env DATABASE_URL, default none]",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("send", help="send an OCPP command to a charger")
    s.add_argument("charge_point_id", metavar="CP")
    s.add_argument("action", metavar="ACTION", help="e.g. Reset, RemoteStartTransaction")
    s.add_argument("payload", metavar="JSON", nargs="?", default="{}",
                   help="the OCPP request payload (default {}; - reads stdin)")  # fmt: skip
    s.add_argument("--wait", type=float, default=0.0, metavar="S",
                   help=f"wait up to S s (at most {q.MAX_WAIT_S:g}) for the outcome")  # fmt: skip
    s.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds the charger has to answer (default 30)")  # fmt: skip

    s = sub.add_parser("command", help="a command and its outcome (Redis, then the history)")
    s.add_argument("command_id", metavar="ID")

    s = sub.add_parser("commands", help="a charger's commands from the history, newest first")
    s.add_argument("charge_point_id", metavar="CP")
    _paging(s, "CURSOR", str, "next_before of the previous page")

    s = sub.add_parser("events", help="a charger's events from the history, newest first")
    s.add_argument("charge_point_id", metavar="CP")
    s.add_argument("--kind", help="only this kind (boot, status, ...)")
    s.add_argument("--from", dest="occurred_from", type=_time, metavar="RFC3339",
                   help="only those at or after this")  # fmt: skip
    s.add_argument("--to", dest="occurred_to", type=_time, metavar="RFC3339",
                   help="only those before this")  # fmt: skip
    _paging(s, "CURSOR", str, "next_before of the previous page")

    sub.add_parser("charge-points", help="every charger that booted")
    s = sub.add_parser("charge-point", help="a charger, its connectors and configuration")
    s.add_argument("charge_point_id", metavar="ID")

    s = sub.add_parser("transactions", help="transactions from the history, newest first")
    s.add_argument("--charge-point", metavar="ID", help="only this charger's")
    s.add_argument("--id-tag", metavar="TAG", help="only those started with this idTag")
    _transaction_filters(s)
    _paging(s, "ID", int, "only ids below this")
    s.add_argument("--csv", action="store_true",
                   help="CSV (a header row, one row per transaction) instead of JSON")  # fmt: skip

    s = sub.add_parser("transaction", help="a transaction and its meter values")
    s.add_argument("transaction_id", metavar="ID", type=int)

    s = sub.add_parser(
        "v201-transactions", help="OCPP 2.0.1 sessions from the history, latest started first"
    )
    s.add_argument("--charge-point", metavar="ID", help="only this charger's")
    s.add_argument("--id-token", metavar="TOKEN", help="only those with this idToken")
    _transaction_filters(s)
    _paging(s, "CURSOR", str, "next_before of the previous page")
    s.add_argument("--csv", action="store_true",
                   help="CSV (a header row, one row per session) instead of JSON")  # fmt: skip

    s = sub.add_parser(
        "v201-transaction", help="an OCPP 2.0.1 session, its events and meter values"
    )
    s.add_argument("charge_point_id", metavar="ID")
    s.add_argument("transaction_id", metavar="TRANSACTION")

    s = sub.add_parser("probe", help="exit 0 if URL answers 2xx, else 1 (a health check)")
    s.add_argument("url", metavar="URL", help="e.g. http://127.0.0.1:9101/readyz")
    s.add_argument("--timeout", type=float, default=3.0, metavar="S",
                   help="seconds to wait for the answer (default 3)")  # fmt: skip

    sub.add_parser("instances", help="running processors, adapters and gateways, and "
                   "where their health probes answer")  # fmt: skip

    s = sub.add_parser("health", help="exit 0 if Redis answers (and the group exists)")
    s.add_argument("--group", action="store_true", help="also require the processors' group")
    tag = sub.add_parser("id-tag", help="the authorization list").add_subparsers(
        dest="tag_command", required=True, metavar="COMMAND"
    )
    s = tag.add_parser("put", help="create or replace an entry")
    s.add_argument("id_tag", metavar="TAG")
    s.add_argument("status", metavar="STATUS",
                   help="Accepted, Blocked, Expired, Invalid or ConcurrentTx")  # fmt: skip
    s.add_argument("--expiry-date", metavar="RFC3339", help="e.g. 2030-01-01T00:00:00Z")
    s.add_argument("--parent", metavar="TAG", help="parent idTag")
    for name, text in (("delete", "remove an entry"), ("get", "show an entry")):
        tag.add_parser(name, help=text).add_argument("id_tag", metavar="TAG")
    return p


@dataclass(frozen=True)
class Clients:
    """What a command works on; ``history`` is unconfigured (its reads
    raise HistoryUnavailable) for commands that do not read it."""

    redis: Redis
    queue: CommandQueue
    history: History


@dataclass(frozen=True)
class Csv:
    """Output that is CSV text, not JSON; ``next_before`` when there is more."""

    text: str
    next_before: int | str | None


Action = Callable[[Clients, argparse.Namespace], Awaitable[Any]]


async def _send(c: Clients, a: argparse.Namespace) -> Any:
    if a.payload == "-":
        payload = sys.stdin.buffer.read(q.MAX_BODY_BYTES + 1)
    else:
        # Bytes that are not UTF-8 came in as surrogates: give them back as
        # they were, for the decoder to refuse.
        payload = a.payload.encode(errors="surrogateescape")
    if len(payload) > q.MAX_BODY_BYTES:
        raise q.InvalidInput(f"the payload is over {q.MAX_BODY_BYTES} bytes")
    return await q.send_command(c.redis, c.queue, a.charge_point_id, a.action, payload,
                                timeout_s=a.timeout, wait_s=a.wait)  # fmt: skip


async def _id_tag(c: Clients, a: argparse.Namespace) -> Any:
    if a.tag_command == "put":
        q.check_id_tag(a.id_tag)
        body = q.id_tag_body(a.status, a.expiry_date, a.parent)
        entry, _created = await q.put_id_tag(c.redis, a.id_tag, body)
        return entry
    if a.tag_command == "delete":
        await q.delete_id_tag(c.redis, a.id_tag)
        return {"id_tag": a.id_tag, "deleted": True}
    return await q.get_id_tag(c.redis, a.id_tag)


async def _health(c: Clients, a: argparse.Namespace) -> Any:
    """For container health checks: Redis reachable and, for a processor,
    its consumer group in place (a Redis that restarted empty has none)."""
    await c.redis.ping()
    if a.group and not await group_exists(c.redis, keys.INBOUND, keys.GROUP):
        raise q.NotFound(f"consumer group {keys.GROUP} on {keys.INBOUND}")
    return {"redis": "ok", "group": "ok" if a.group else "not checked"}


async def _instances(c: Clients, a: argparse.Namespace) -> Any:
    now = instances.now_ms()
    return instances.listing(await instances.read(c.redis, now), now)


async def _transactions(c: Clients, a: argparse.Namespace) -> Any:
    page = await h.list_transactions(
        c.history, charge_point_id=a.charge_point, id_tag=a.id_tag, active=a.active,
        started_from=a.started_from, started_to=a.started_to, limit=a.limit, before=a.before,
    )  # fmt: skip
    return Csv(h.transactions_csv(page.transactions), page.next_before) if a.csv else page


async def _sessions(c: Clients, a: argparse.Namespace) -> Any:
    page = await h.list_sessions(
        c.history, charge_point_id=a.charge_point, id_token=a.id_token, active=a.active,
        started_from=a.started_from, started_to=a.started_to, limit=a.limit, before=a.before,
    )  # fmt: skip
    return Csv(h.sessions_csv(page.transactions), page.next_before) if a.csv else page


ACTIONS: dict[str, Action] = {
    "health": _health,
    "instances": _instances,
    "send": _send,
    "command": lambda c, a: h.get_command(c.history, c.queue, a.command_id),
    "commands": lambda c, a: h.list_commands(
        c.history, a.charge_point_id, limit=a.limit, before=a.before
    ),
    "charge-points": lambda c, a: q.list_charge_points(c.redis),
    "charge-point": lambda c, a: q.get_charge_point(c.redis, a.charge_point_id),
    "transactions": _transactions,
    "transaction": lambda c, a: h.get_transaction(c.history, c.redis, a.transaction_id),
    "v201-transactions": _sessions,
    "v201-transaction": lambda c, a: h.get_session(
        c.history, c.redis, a.charge_point_id, a.transaction_id
    ),
    "events": lambda c, a: h.list_events(
        c.history,
        a.charge_point_id,
        kind=a.kind,
        occurred_from=a.occurred_from,
        occurred_to=a.occurred_to,
        limit=a.limit,
        before=a.before,
    ),  # fmt: skip
    "id-tag": _id_tag,
}
# The commands that read PostgreSQL; the others never connect to it.
HISTORY = frozenset({"command", "commands", "transactions", "transaction", "events",
                     "v201-transactions", "v201-transaction"})  # fmt: skip


# A health check runs every few seconds: it exports nothing (nor does probe).
UNTRACED = frozenset({"health"})


async def run(
    args: argparse.Namespace, settings: CliSettings, providers: Providers | None = None
) -> Any:
    """The command, in a span of its own (``ocpp-cli send``: a command's
    ``send`` span is its child) when ``providers`` trace."""
    telemetry = providers or disabled()
    try:
        history = History(settings.database_url if args.command in HISTORY else "")
    except ValueError as exc:
        raise q.InvalidInput(f"invalid setting: {exc}") from None
    redis = connect(settings.redis_url)
    try:
        queue = CommandQueue(
            redis, reply_ttl_s=settings.reply_ttl_s, retention_s=settings.command_retention_s,
            tracer_provider=telemetry.tracer_provider, default_protocol=settings.default_protocol,
        )  # fmt: skip
        await history.open()
        with _span(telemetry.tracer_provider, f"ocpp-cli {args.command}"):
            return await ACTIONS[args.command](Clients(redis, queue, history), args)
    finally:
        await redis.aclose()
        await history.close()


@contextlib.contextmanager
def _span(provider: trace.TracerProvider, name: str) -> Iterator[None]:
    tracer = provider.get_tracer("ocpp.cli")
    if not tracing(tracer):
        yield
        return
    with tracer.start_as_current_span(name, kind=trace.SpanKind.INTERNAL):
        yield


def _telemetry(command: str) -> contextlib.AbstractContextManager[Providers]:
    """Providers for the run, flushed as it ends: exported in process, as
    the command exits right after its work."""
    if command in UNTRACED:
        return contextlib.nullcontext(disabled())
    return configured("ocpp-cli", offload=False)


def probe(url: str, timeout: float) -> int:
    """GET ``url``: 0 if it answers 2xx, else 1; its body goes to stdout
    (where Docker keeps a health check's output)."""
    if not url.startswith(("http://", "https://")):
        return _fail(1, "invalid input", f"not an http(s) URL: {url!r}")
    try:
        # Straight to the service: an HTTP(S)_PROXY in the environment must
        # not stand between a health check and 127.0.0.1.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=timeout) as resp:
            sys.stdout.write(resp.read(4096).decode(errors="replace") + "\n")
            return OK
    except urllib.error.HTTPError as exc:
        with exc:
            sys.stdout.write(exc.read(4096).decode(errors="replace") + "\n")
        return _fail(1, "probe", f"HTTP {exc.code} from {url}")
    except OSError as exc:  # URLError, timeouts
        return _fail(1, "probe", f"{url}: {exc}")


def _fail(code: int, kind: str, message: str) -> int:
    sys.stderr.write(f"ocpp-cli: {kind}: {message}\n")
    return code


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)  # exits 2 on a usage error
    if args.command == "probe":  # no Redis involved
        return probe(args.url, args.timeout)
    setup("WARNING", "cli")  # what goes wrong, as JSON lines with the trace id
    with _telemetry(args.command) as providers:
        try:
            settings = _settings(
                os.environ if environ is None else environ, args.redis_url, args.database_url
            )
            result = anyio.run(run, args, settings, providers, backend="asyncio")
        except q.NotFound as exc:
            return _fail(NOT_FOUND, "not found", str(exc))
        except q.InvalidInput as exc:
            return _fail(INVALID, "invalid input", str(exc))
        except UnicodeError as exc:  # an id or tag with bytes that are not UTF-8
            return _fail(INVALID, "invalid input", f"not valid UTF-8: {exc}")
        except HistoryUnavailable as exc:
            return _fail(UNAVAILABLE, "history unavailable", str(exc))
        except (RedisError, OSError) as exc:
            return _fail(UNAVAILABLE, "redis unavailable", describe(exc))
    if isinstance(result, Csv):
        sys.stdout.write(result.text)
        if result.next_before is not None:
            sys.stderr.write(f"ocpp-cli: more: the next page is --before {result.next_before}\n")
        return OK
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(result), indent=2).decode() + "\n")
    return OK


if __name__ == "__main__":
    sys.exit(main())
