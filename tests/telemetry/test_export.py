"""Providers from the ``OTEL_*`` environment, and a real OTLP/HTTP export
received and decoded by a receiver of the test's own."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest
from opentelemetry import metrics, trace
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.sdk import metrics as sdk_metrics
from opentelemetry.sdk import trace as sdk_trace
from redis.asyncio import Redis

from adapters.list_to_stream import ListToStream
from processor import keys, telemetry
from processor.command_queue import CommandQueue
from processor.spans import OffloadedTracerProvider
from tests.messages import call
from tests.telemetry.conftest import consumer, running, serving

OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
)  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


class Receiver:
    """An OTLP/HTTP endpoint that keeps what it is sent, by path."""

    def __init__(self) -> None:
        received: list[tuple[str, str, bytes]] = []
        self.received = received
        posted = self.posted = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, self.headers["Content-Type"], body))
                posted.set()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self, path: str) -> list[bytes]:
        return [body for p, _, body in self.received if p == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    with serving(r.server):
        yield r


def values(attributes: list[KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


@pytest.mark.anyio
async def test_spans_and_metrics_reach_an_otlp_http_receiver(
    redis: Redis, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)  # implies otlp, http
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    providers = telemetry.from_env("ocpp-processor")  # spans go through an exporter process
    try:
        adapter = ListToStream(redis, tracer_provider=providers.tracer_provider)
        await redis.lpush(keys.REQUESTS, call("CP7", "b1", "Heartbeat", {}))
        assert await adapter.move_once() == 1
        async with running(consumer(redis, "P", providers)):
            assert await redis.brpop([keys.responses("CP7")], timeout=5)
        queue = CommandQueue(redis, tracer_provider=providers.tracer_provider)
        await queue.send("CP7", "Reset", b'{"type":"Soft"}')
        await anyio.to_thread.run_sync(providers.tracer_provider.force_flush)
        await anyio.to_thread.run_sync(providers.meter_provider.force_flush)
    finally:
        await anyio.to_thread.run_sync(providers.shutdown)

    assert {ct for _, ct, _ in receiver.received} == {"application/x-protobuf"}
    spans = []
    for body in receiver.bodies("/v1/traces"):
        request = ExportTraceServiceRequest.FromString(body)
        for rs in request.resource_spans:
            resource = values(list(rs.resource.attributes))
            assert resource["service.name"] == "ocpp-processor"
            assert resource["deployment.environment"] == "test"
            assert resource["service.instance.id"]
            spans += [s for ss in rs.scope_spans for s in ss.spans]
    by_name = {s.name: s for s in spans}
    assert sorted(by_name) == ["process ocpp:inbound", "send Reset", "send ocpp:inbound"]
    assert len(spans) == 3
    span, sent = by_name["process ocpp:inbound"], by_name["send ocpp:inbound"]
    assert span.trace_id == sent.trace_id and span.parent_span_id == sent.span_id
    assert sent.kind == sent.SPAN_KIND_PRODUCER and not sent.parent_span_id
    assert values(list(by_name["send Reset"].attributes))["ocpp.action"] == "Reset"
    assert span.kind == span.SPAN_KIND_CONSUMER
    got = values(list(span.attributes))
    assert got["messaging.system"] == "redis"
    assert got["messaging.destination.name"] == keys.INBOUND
    assert got["messaging.consumer.group.name"] == keys.GROUP
    assert got["messaging.operation.type"] == "process"
    assert got["ocpp.charge_point_id"] == "CP7"
    assert got["ocpp.action"] == "Heartbeat"
    assert got["ocpp.message_type"] == 2

    names = set()
    for body in receiver.bodies("/v1/metrics"):
        request = ExportMetricsServiceRequest.FromString(body)
        for rm in request.resource_metrics:
            names |= {m.name for sm in rm.scope_metrics for m in sm.metrics}
    assert {"ocpp.messages", "messaging.process.duration", "ocpp.message.latency",
            "ocpp.stream.lag", "ocpp.stream.pending"} <= names  # fmt: skip


def span_names(receiver: Receiver) -> list[str]:
    return [
        span.name
        for body in receiver.bodies("/v1/traces")
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


def test_the_exporter_outlives_a_sigterm_and_delivers_what_it_holds(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    providers = telemetry.from_env("ocpp-processor")
    provider = providers.tracer_provider
    assert isinstance(provider, OffloadedTracerProvider)
    tracer = provider.get_tracer("test")
    try:
        with tracer.start_as_current_span("before"):
            pass
        provider.force_flush()
        assert receiver.posted.wait(20), "the exporter never posted"  # it is up and running
        # As a service manager stopping the whole group would: the service
        # goes on to shut down in order, and its exporter must still be there.
        os.kill(provider.shipper.pid, signal.SIGTERM)
        with tracer.start_as_current_span("after"):
            pass
    finally:
        providers.shutdown()
    assert sorted(span_names(receiver)) == ["after", "before"]


def test_nothing_configured_means_no_op_providers() -> None:
    providers = telemetry.from_env("ocpp-processor")
    assert isinstance(providers.tracer_provider, trace.NoOpTracerProvider)
    assert isinstance(providers.meter_provider, metrics.NoOpMeterProvider)


def test_sdk_disabled_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    providers = telemetry.from_env("ocpp-processor")
    assert isinstance(providers.tracer_provider, trace.NoOpTracerProvider)


def test_sampler_exporters_and_names_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-processor")
    providers = telemetry.from_env("ocpp-processor")
    try:
        tp = providers.tracer_provider
        assert isinstance(tp, sdk_trace.TracerProvider)
        assert "TraceIdRatioBased{0.1}" in tp.sampler.get_description()
        assert tp.resource.attributes["service.name"] == "my-processor"
        assert isinstance(providers.meter_provider, metrics.NoOpMeterProvider)
    finally:
        providers.shutdown()


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_both_otlp_protocols_are_installed(monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://127.0.0.1:9")
    providers = telemetry.from_env("ocpp-adapter")
    assert isinstance(providers.meter_provider, sdk_metrics.MeterProvider)
    assert isinstance(providers.tracer_provider, trace.NoOpTracerProvider)  # not configured
    providers.meter_provider.shutdown(timeout_millis=100)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("OTEL_TRACES_EXPORTER", "nosuchexporter"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")],
)
def test_a_bad_configuration_is_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError):
        telemetry.from_env("ocpp-processor")
