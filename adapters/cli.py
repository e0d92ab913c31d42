"""``ocpp-cli``: what the HTTP API does, from a terminal, straight on Redis.

It uses the same CommandQueue and the same reads and writes as the API
(``adapters/api_queries.py``) and prints the same JSON. Exit codes: 0 done,
1 not found, 2 invalid input, 3 Redis unavailable. ``probe`` is the
exception: a container health check for images without curl, it exits 0
when a URL answers 2xx and 1 otherwise (Docker reserves 2).

    ocpp-cli send CP42 Reset '{"type": "Soft"}' --wait 10
    ocpp-cli charge-point CP42
    ocpp-cli transactions --charge-point CP42 --active
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
from typing import Annotated, Any

import anyio
import msgspec
from msgspec import Meta
from opentelemetry import trace
from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapters import api_queries as q
from processor import instances, keys
from processor.command_queue import CommandQueue
from processor.logs import setup
from processor.redis_io import connect, describe, group_exists
from processor.settings import RedisUrl, env_name
from processor.telemetry import Providers, configured, disabled
from processor.trace_context import tracing

OK, NOT_FOUND, INVALID, UNAVAILABLE = 0, 1, 2, 3


class CliSettings(msgspec.Struct, kw_only=True, frozen=True):
    """What the CLI takes from the environment (the same names as the API)."""

    redis_url: RedisUrl = "redis://localhost:6379/0"
    reply_ttl_s: Annotated[int, Meta(ge=1)] = 300
    command_retention_s: Annotated[int, Meta(ge=1)] = 7 * 86400


def _settings(environ: Mapping[str, str], redis_url: str | None) -> CliSettings:
    values = {
        f.name: environ[env_name(f.name)]
        for f in msgspec.structs.fields(CliSettings)
        if env_name(f.name) in environ
    }
    if redis_url is not None:
        values["redis_url"] = redis_url
    try:
        return msgspec.convert(values, CliSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise q.InvalidInput(f"invalid setting: {exc}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ocpp-cli",
        description="Send commands to chargers and read the central system's state in Redis.",
        epilog="exit codes: 0 done, 1 not found, 2 invalid input, 3 Redis unavailable "
        "(probe: 0 or 1)",
    )
    p.add_argument(
        "--redis-url", help="Redis to use [env REDIS_URL, default redis://localhost:6379/0]"
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

    s = sub.add_parser("command", help="a command and its outcome")
    s.add_argument("command_id", metavar="ID")

    sub.add_parser("charge-points", help="every charger that booted")
    s = sub.add_parser("charge-point", help="a charger, its connectors and configuration")
    s.add_argument("charge_point_id", metavar="ID")

    s = sub.add_parser("transactions", help="transactions, newest first")
    s.add_argument("--charge-point", metavar="ID", help="only this charger's")
    state = s.add_mutually_exclusive_group()
    state.add_argument("--active", action="store_const", const=True, dest="active",
                       help="only running ones")  # fmt: skip
    state.add_argument("--finished", action="store_const", const=False, dest="active",
                       help="only finished ones")  # fmt: skip
    s.add_argument("--limit", type=int, default=100, help=f"at most this many (max {q.MAX_LIMIT})")
    s.add_argument("--before", type=int, metavar="ID", help="only ids below this (paging)")

    s = sub.add_parser("transaction", help="a transaction and its meter samples")
    s.add_argument("transaction_id", metavar="ID", type=int)

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


Action = Callable[[Redis, CommandQueue, argparse.Namespace], Awaitable[Any]]


async def _send(redis: Redis, queue: CommandQueue, a: argparse.Namespace) -> Any:
    if a.payload == "-":
        payload = sys.stdin.buffer.read(q.MAX_BODY_BYTES + 1)
    else:
        # Bytes that are not UTF-8 came in as surrogates: give them back as
        # they were, for the decoder to refuse.
        payload = a.payload.encode(errors="surrogateescape")
    if len(payload) > q.MAX_BODY_BYTES:
        raise q.InvalidInput(f"the payload is over {q.MAX_BODY_BYTES} bytes")
    return await q.send_command(redis, queue, a.charge_point_id, a.action, payload,
                                timeout_s=a.timeout, wait_s=a.wait)  # fmt: skip


async def _id_tag(redis: Redis, queue: CommandQueue, a: argparse.Namespace) -> Any:
    if a.tag_command == "put":
        q.check_id_tag(a.id_tag)
        body = q.id_tag_body(a.status, a.expiry_date, a.parent)
        entry, _created = await q.put_id_tag(redis, a.id_tag, body)
        return entry
    if a.tag_command == "delete":
        await q.delete_id_tag(redis, a.id_tag)
        return {"id_tag": a.id_tag, "deleted": True}
    return await q.get_id_tag(redis, a.id_tag)


async def _health(redis: Redis, queue: CommandQueue, a: argparse.Namespace) -> Any:
    """For container health checks: Redis reachable and, for a processor,
    its consumer group in place (a Redis that restarted empty has none)."""
    await redis.ping()
    if a.group and not await group_exists(redis, keys.INBOUND, keys.GROUP):
        raise q.NotFound(f"consumer group {keys.GROUP} on {keys.INBOUND}")
    return {"redis": "ok", "group": "ok" if a.group else "not checked"}


async def _instances(redis: Redis, queue: CommandQueue, a: argparse.Namespace) -> Any:
    now = instances.now_ms()
    return instances.listing(await instances.read(redis, now), now)


ACTIONS: dict[str, Action] = {
    "health": _health,
    "instances": _instances,
    "send": _send,
    "command": lambda r, queue, a: q.get_command(queue, a.command_id),
    "charge-points": lambda r, queue, a: q.list_charge_points(r),
    "charge-point": lambda r, queue, a: q.get_charge_point(r, a.charge_point_id),
    "transactions": lambda r, queue, a: q.list_transactions(
        r, charge_point_id=a.charge_point, active=a.active, limit=a.limit, before=a.before
    ),
    "transaction": lambda r, queue, a: q.get_transaction(r, a.transaction_id),
    "id-tag": _id_tag,
}


# A health check runs every few seconds: it exports nothing (nor does probe).
UNTRACED = frozenset({"health"})


async def run(
    args: argparse.Namespace, settings: CliSettings, providers: Providers | None = None
) -> Any:
    """The command, in a span of its own (``ocpp-cli send``: a command's
    ``send`` span is its child) when ``providers`` trace."""
    telemetry = providers or disabled()
    redis = connect(settings.redis_url)
    try:
        queue = CommandQueue(
            redis, reply_ttl_s=settings.reply_ttl_s, retention_s=settings.command_retention_s,
            tracer_provider=telemetry.tracer_provider,
        )  # fmt: skip
        with _span(telemetry.tracer_provider, f"ocpp-cli {args.command}"):
            return await ACTIONS[args.command](redis, queue, args)
    finally:
        await redis.aclose()


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
            settings = _settings(os.environ if environ is None else environ, args.redis_url)
            result = anyio.run(run, args, settings, providers, backend="asyncio")
        except q.NotFound as exc:
            return _fail(NOT_FOUND, "not found", str(exc))
        except q.InvalidInput as exc:
            return _fail(INVALID, "invalid input", str(exc))
        except UnicodeError as exc:  # an id or tag with bytes that are not UTF-8
            return _fail(INVALID, "invalid input", f"not valid UTF-8: {exc}")
        except (RedisError, OSError) as exc:
            return _fail(UNAVAILABLE, "redis unavailable", describe(exc))
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(result), indent=2).decode() + "\n")
    return OK


if __name__ == "__main__":
    sys.exit(main())
