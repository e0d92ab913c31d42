"""Providers from the ``OTEL_*`` environment, and a real OTLP/HTTP export
received and decoded by a receiver of the test's own."""

from __future__ import annotations

import os
import signal

import anyio
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk import metrics as sdk_metrics
from opentelemetry.sdk import trace as sdk_trace
from redis.asyncio import Redis

from adapters.list_to_stream import ListToStream
from processor import keys, telemetry
from processor.command_queue import CommandQueue
from processor.spans import OffloadedTracerProvider
from tests.messages import call
from tests.telemetry.conftest import consumer, running
from tests.telemetry.otlp_receiver import Receiver, values

pytestmark = pytest.mark.usefixtures("clean_otel_env")


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
    exported = receiver.spans()
    for e in exported:
        assert e.service == "ocpp-processor"
        assert e.resource["deployment.environment"] == "test"
        assert e.resource["service.instance.id"]
    spans = [e.span for e in exported]
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

    names = receiver.metric_names("ocpp-processor")
    assert {"ocpp.messages", "messaging.process.duration", "ocpp.message.latency",
            "ocpp.stream.lag", "ocpp.stream.pending"} <= names  # fmt: skip


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
    assert sorted(e.span.name for e in receiver.spans()) == ["after", "before"]


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
