"""Telemetry under test: in-memory span exporters and metric readers, one set
per replica, and in-process services on the real Redis."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler
from redis.asyncio import Redis

from processor.consumer import Consumer
from processor.dispatch import Dispatcher, Limits
from processor.logs import JsonFormatter
from processor.protocols import protocols
from processor.redis_io import connect
from processor.settings import ProcessorSettings
from processor.state import RedisState
from processor.stream import GroupStream
from processor.telemetry import Providers
from processor.types import HandlerConfig
from tests.telemetry.otlp_receiver import Receiver


@dataclass
class Telemetry:
    """One process's providers, with what they recorded."""

    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def finished(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if name is None or s.name == name]

    def points(self, metric: str) -> list[Any]:
        """Data points of ``metric`` as collected now."""
        data: MetricsData | None = self.reader.get_metrics_data()
        out: list[Any] = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        out.extend(m.data.data_points)
        return out


class _Progress:
    """Wakes ``eventually`` whenever a span is exported: what the tests wait
    for (spans, metrics, log lines) changes only as a batch is finished, and
    finishing a batch ends its spans."""

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        self._event = anyio.Event()
        await self._event.wait()


progress = _Progress()


class NotifyingSpanExporter(InMemorySpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        progress.notify()
        return result


def make_telemetry(sampler: Sampler = ALWAYS_ON) -> Telemetry:
    spans = NotifyingSpanExporter()
    tracer_provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    return Telemetry(spans, reader, tracer_provider, meter_provider)


@pytest.fixture
def otel() -> Iterator[Callable[..., Telemetry]]:
    made: list[Telemetry] = []

    def factory(sampler: Sampler = ALWAYS_ON) -> Telemetry:
        made.append(make_telemetry(sampler))
        return made[-1]

    yield factory
    for t in made:
        t.tracer_provider.shutdown()
        t.meter_provider.shutdown()


@pytest.fixture
async def redis(redis_db: str) -> AsyncIterator[Redis]:
    client = connect(redis_db)
    yield client
    await client.aclose()


def consumer(redis: Redis, name: str, t: Telemetry | Providers | None, **settings: Any) -> Consumer:
    s = ProcessorSettings(**{"read_block_ms": 50, "claim_interval_ms": 50, **settings})
    dispatcher = Dispatcher(protocols(), RedisState(redis, 60), HandlerConfig(),
                            Limits(max_deliveries=s.max_deliveries))  # fmt: skip
    return Consumer(
        GroupStream(redis, name), dispatcher, s,
        tracer_provider=t.tracer_provider if t else None,
        meter_provider=t.meter_provider if t else None,
    )  # fmt: skip


@asynccontextmanager
async def running(*consumers: Consumer) -> AsyncIterator[None]:
    """The consumers run in the block, and are stopped and drained after it."""
    async with anyio.create_task_group() as tg:
        for c in consumers:
            tg.start_soon(c.run)
        try:
            yield
        finally:
            for c in consumers:
                c.stop()


async def eventually(check: Callable[[], Awaitable[bool]] | Callable[[], bool]) -> None:
    """Wait until ``check()`` holds, re-checking as spans are exported;
    fails after 10 s."""
    with anyio.fail_after(10):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await progress.wait()


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def by_attr(spans: Sequence[ReadableSpan], key: str, value: Any) -> ReadableSpan:
    [found] = [s for s in spans if attrs(s).get(key) == value]
    return found


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[None]:
    """``server`` answering in a thread of its own while the block runs."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An OTLP/HTTP endpoint (``receiver.url``) keeping what it is sent."""
    r = Receiver()
    with serving(r.server):
        yield r


@pytest.fixture
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``OTEL_*`` setting from the tests' own environment."""
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """What the root logger writes through the JSON formatter, parsed."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("test-service"))
    root = logging.getLogger()
    root.addHandler(handler)
    yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    root.removeHandler(handler)
