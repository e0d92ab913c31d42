"""The API's request spans and the CLI's command span, in process on the
real Redis: what is traced, what is not, and the log lines inside them."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.trace import SpanKind
from redis.asyncio import Redis

from adapters import cli
from adapters.api import ApiSettings, create_app
from adapters.devstack import free_port
from processor import keys, trace_context
from processor.telemetry import Providers, disabled
from tests.telemetry.conftest import Telemetry, attrs

pytestmark = pytest.mark.anyio

THEIRS = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def providers(t: Telemetry) -> Providers:
    return Providers(t.tracer_provider, t.meter_provider)


async def test_health_checks_and_the_schema_make_no_spans(
    redis_db: str, otel: Callable[..., Telemetry]
) -> None:
    t = otel()
    async with AsyncTestClient(app=create_app(ApiSettings(redis_url=redis_db), providers(t))) as c:
        for path in ("/livez", "/readyz", "/healthz", "/schema/openapi.json"):
            assert (await c.get(path)).status_code == 200, path
        assert t.finished() == []
        assert (await c.get("/v1/charge-points")).status_code == 200
        assert (await c.get("/v1/commands/nope")).status_code == 404
    listed, missing = t.finished()
    assert (listed.name, missing.name) == ("GET /v1/charge-points", "GET /v1/commands/{command_id}")
    assert attrs(missing)["http.route"] == "/v1/commands/{command_id}"
    assert attrs(missing)["http.status_code"] == 404
    assert listed.kind is SpanKind.SERVER


@pytest.mark.parametrize("given", [None, disabled()])
async def test_unconfigured_the_api_does_no_telemetry_work(
    redis: Redis, redis_db: str, given: Providers | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    async def entered(*args: Any) -> None:
        raise AssertionError("a request went through the telemetry middleware")

    monkeypatch.setattr(OpenTelemetryMiddleware, "__call__", entered)
    await redis.sadd(keys.CHARGE_POINTS, "CP1")
    async with AsyncTestClient(app=create_app(ApiSettings(redis_url=redis_db), given)) as c:
        resp = await c.post("/v1/charge-points/CP1/commands/ClearCache",
                            headers={"traceparent": THEIRS})  # fmt: skip
        assert resp.status_code == 202, resp.text
    # No span of its own: the command keeps the caller's trace context.
    assert await redis.hget(keys.command(resp.json()["command_id"]), "traceparent") == (
        THEIRS.encode()
    )


async def test_a_request_logs_inside_its_span(
    lines: Callable[[], list[dict[str, Any]]], otel: Callable[..., Telemetry]
) -> None:
    t = otel()
    nowhere = ApiSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with AsyncTestClient(app=create_app(nowhere, providers(t))) as c:
        assert (await c.get("/v1/charge-points")).status_code == 503
    [request] = t.finished("GET /v1/charge-points")
    [said] = [line for line in lines() if line["message"].startswith("redis unavailable")]
    assert said["trace_id"] == f"{request.context.trace_id:032x}"
    assert said["span_id"] == f"{request.context.span_id:016x}"


def send_args(action: str = "Reset", payload: str = '{"type":"Soft"}') -> argparse.Namespace:
    return cli.parser().parse_args(["send", "CP1", action, payload])


async def test_a_cli_send_is_a_span_with_the_send_span_in_it(
    redis: Redis, redis_db: str, otel: Callable[..., Telemetry]
) -> None:
    t = otel()
    await redis.sadd(keys.CHARGE_POINTS, "CP1")
    command = await cli.run(send_args(), cli.CliSettings(redis_url=redis_db), providers(t))
    [run] = t.finished("ocpp-cli send")
    [send] = t.finished("send Reset")
    assert run.kind is SpanKind.INTERNAL and run.parent is None
    assert send.parent is not None and send.parent.span_id == run.context.span_id
    assert send.context.trace_id == run.context.trace_id
    stored = await redis.hget(keys.command(command.command_id), "traceparent")
    assert stored == trace_context.traceparent(send.context).encode()


async def test_a_cli_command_logs_inside_its_span(
    redis_db: str, lines: Callable[[], list[dict[str, Any]]], otel: Callable[..., Telemetry],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    async def logs(clients: cli.Clients, args: argparse.Namespace) -> list[str]:
        logging.getLogger("cli").warning("working")
        return []

    monkeypatch.setitem(cli.ACTIONS, "charge-points", logs)
    t = otel()
    args = cli.parser().parse_args(["charge-points"])
    await cli.run(args, cli.CliSettings(redis_url=redis_db), providers(t))
    [run] = t.finished("ocpp-cli charge-points")
    [said] = [line for line in lines() if line["message"] == "working"]
    assert said["trace_id"] == f"{run.context.trace_id:032x}"
    assert said["span_id"] == f"{run.context.span_id:016x}"


async def test_the_cli_traces_nothing_unconfigured(redis: Redis, redis_db: str) -> None:
    await redis.sadd(keys.CHARGE_POINTS, "CP1")
    command = await cli.run(send_args(), cli.CliSettings(redis_url=redis_db))
    assert command.state == "sent"
    assert await redis.hget(keys.command(command.command_id), "traceparent") == b""
