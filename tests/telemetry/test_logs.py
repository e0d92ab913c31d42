"""Logs are JSON lines carrying the trace they belong to, and no secrets."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
from redis.asyncio import Redis

from adapters.devstack import Service, wait_for
from processor import keys
from processor.logs import trace_fields
from processor.state import RedisState
from processor.types import OpenedTransaction
from tests.messages import start
from tests.telemetry.conftest import Telemetry, consumer, eventually, running

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


def test_a_line_has_the_fields_and_the_current_span(
    lines: Callable[[], list[dict[str, Any]]], otel: Callable[..., Telemetry]
) -> None:
    log = logging.getLogger("tests.json")
    tracer = otel().tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        log.warning("inside %s", "a span")
    log.warning("outside")
    inside, outside = lines()
    sc = span.get_span_context()
    assert inside["trace_id"] == f"{sc.trace_id:032x}"
    assert inside["span_id"] == f"{sc.span_id:016x}"
    assert inside["message"] == "inside a span"
    assert inside["level"] == "WARNING"
    assert inside["logger"] == "tests.json"
    assert inside["service"] == "test-service"
    assert inside["time"].endswith("Z")
    assert "trace_id" not in outside


def test_secrets_are_masked(lines: Callable[[], list[dict[str, Any]]]) -> None:
    log = logging.getLogger("tests.json")
    log.warning("connecting to redis://default:hunter2@redis:6379/0")
    log.warning("and to redis://ocpp-api:p@ss-Q7w@redis:6379/0")
    log.warning("headers Authorization: Bearer s3cr3t-token, api_key=abc123")
    try:
        raise ValueError("rediss://:pa55word@cache:6380 refused")
    except ValueError:
        log.exception("failed")
    text = json.dumps(lines())
    for secret in ("hunter2", "s3cr3t-token", "abc123", "pa55word", "ss-Q7w"):
        assert secret not in text
    assert "redis://default:***@redis:6379/0" in text
    assert "redis://ocpp-api:***@redis:6379/0" in text


class Broken(RedisState):
    async def open_transaction(self, *args: Any) -> OpenedTransaction:
        raise RuntimeError("the state store is broken")


@pytest.mark.anyio
async def test_a_failing_message_is_logged_with_its_trace(
    redis: Redis, lines: Callable[[], list[dict[str, Any]]], otel: Callable[..., Telemetry]
) -> None:
    c = consumer(redis, "P", otel())
    c._dispatcher._state = Broken(redis, 60)
    traceparent = f"00-{TRACE}-{SPAN}-01"
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: start("CP1", "s1"), "tp": traceparent})
    async with running(c):
        await eventually(lambda: any(line.get("trace_id") for line in lines()))
    failed = next(line for line in lines() if line["message"].startswith("handler failed"))
    assert (failed["trace_id"], failed["span_id"]) == (TRACE, SPAN)
    assert "the state store is broken" in failed["exception"]
    assert trace_fields(traceparent) == {"trace_id": TRACE, "span_id": SPAN}


def test_the_services_log_json_lines(redis_db: str) -> None:
    client = redis_sync.Redis.from_url(redis_db)

    def reading() -> bool:  # signals are handled from then on
        return any(c["cmd"] == "xreadgroup" and "b" in c["flags"] for c in client.client_list())

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "processor.log"
        with open(path, "wb") as log:
            service = Service("processor", redis_db, log=log)
            try:
                wait_for(reading, 20, "the processor to wait for messages")
            finally:
                assert service.terminate() == 0
                client.close()
        records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[0]["service"] == "processor"
    assert records[0]["logger"] == "processor"
    assert any(r["message"].startswith("consumer ") for r in records)
