"""OpenTelemetry providers from the standard ``OTEL_*`` environment, and how
the services record telemetry off their hot paths.

Nothing is exported unless an exporter is configured, by
``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` (``otlp``, ``console``,
any installed exporter, ``none``) or by an OTLP endpoint
(``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_ENDPOINT``, which implies ``otlp``).
Unconfigured, the providers are the API's no-ops and the services skip
telemetry altogether: the hot paths test a flag, they don't make a no-op span
per message. Everything else is the SDK's own handling of the environment:
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``
(+``_ARG``), ``OTEL_EXPORTER_OTLP_*`` (``_PROTOCOL`` ``grpc`` or
``http/protobuf``, the default), ``OTEL_BSP_*``, ``OTEL_METRIC_EXPORT_*``,
``OTEL_SDK_DISABLED``; or, for traces exported by OTLP/HTTP alone, our own
reading of the same variables (processor/otlp_http.py).

A message's trace starts in the adapter (or continues the ``traceparent``
the ws-server put in the envelope) and travels in the stream entry's ``tp``
field, which only a sampled trace's entry (or one continuing the sender's)
has: nothing downstream records an unsampled trace, so nothing is carried
for it, and the processor's parent-based sampler takes an entry without a
context for one the adapter did not sample. The Python SDK costs tens of µs
per span to build and as much again to encode, more than handling the
message does, so the hot paths keep the decisions (sampling, which parent)
and describe each sampled span as a ``SpanRecord``
(processor/span_record.py). A recorder (processor/spans.py) turns records
into spans: in process, through the tracer provider the service was given
(tests), or, for providers made by :func:`from_env`, in an exporter process
of its own (processor/span_exporter.py) that runs at the lowest CPU priority
and is fed through a socket that never blocks (a full socket drops spans, as
a full SDK queue would). When OTLP/HTTP is the only trace exporter, the
services encode their spans (processor/otlp.py) and that process only
batches and posts them. Metrics are summed per batch, and the hot ones reach
the SDK when it collects (processor/consumer_telemetry.py).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk import metrics as sdk_metrics
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from processor.spans import WIRE_OTLP, WIRE_RECORDS, OffloadedTracerProvider, start_exporter

_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}


# -- providers ---------------------------------------------------------------


@dataclass(frozen=True)
class Providers:
    """What a service injects into its parts; :meth:`shutdown` flushes."""

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider

    @property
    def enabled(self) -> bool:
        """Whether anything is exported: unconfigured, a service does no
        telemetry work at all, not even a no-op span per request."""
        return isinstance(self.tracer_provider, sdk_trace.TracerProvider) or isinstance(
            self.meter_provider, sdk_metrics.MeterProvider
        )

    def shutdown(self) -> None:
        if isinstance(self.tracer_provider, sdk_trace.TracerProvider):
            self.tracer_provider.shutdown()
        if isinstance(self.meter_provider, sdk_metrics.MeterProvider):
            self.meter_provider.shutdown()


def disabled() -> Providers:
    return Providers(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider())


@contextlib.contextmanager
def configured(service_name: str, *, offload: bool = True) -> Iterator[Providers]:
    """:func:`from_env`'s providers for the life of a service or command,
    shut down (and so flushed) after it, however it ends. A bad ``OTEL_*``
    setting stops it at start, saying why. Every entry point configures its
    telemetry here; a short-lived command passes ``offload=False``: it exits
    right after its work, and would only wait for an exporter process that
    runs at idle priority."""
    try:
        providers = from_env(service_name, offload=offload)
    except ValueError as exc:
        raise SystemExit(f"OpenTelemetry configuration: {exc}") from None
    try:
        yield providers
    finally:
        providers.shutdown()


def from_env(default_service_name: str, *, offload: bool = True) -> Providers:
    """Providers as the ``OTEL_*`` environment configures them (module doc);
    spans are exported by a child process unless ``offload`` is False (or
    the platform has no SOCK_SEQPACKET). Raises ValueError for an unknown
    exporter or OTLP protocol."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return disabled()
    span_exporters = [exporter_class(name, "traces") for name in exporter_names("traces")]
    readers: list[MetricReader] = []
    for name in exporter_names("metrics"):
        cls = exporter_class(name, "metrics")
        # Pull exporters (prometheus) are readers themselves.
        pull = issubclass(cls, MetricReader)
        readers.append(cls() if pull else PeriodicExportingMetricReader(cls()))
    if not span_exporters and not readers:
        return disabled()
    resource = _resource(default_service_name)
    tracer_provider: trace.TracerProvider = trace.NoOpTracerProvider()
    wire = WIRE_OTLP if otlp_http_only() else WIRE_RECORDS
    shipper = start_exporter(resource, wire) if span_exporters and offload else None
    if shipper is not None:
        tracer_provider = OffloadedTracerProvider(resource, shipper)
    elif span_exporters:
        # The sampler comes from OTEL_TRACES_SAMPLER (default parentbased_always_on).
        sdk = sdk_trace.TracerProvider(resource=resource)
        for cls in span_exporters:
            sdk.add_span_processor(BatchSpanProcessor(cls()))
        tracer_provider = sdk
    meter_provider: metrics.MeterProvider = metrics.NoOpMeterProvider()
    if readers:
        meter_provider = sdk_metrics.MeterProvider(metric_readers=readers, resource=resource)
    return Providers(tracer_provider, meter_provider)


def exporter_names(signal: str) -> list[str]:
    names = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER")
    if names is None:
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
            f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    return [n for n in (part.strip() for part in names.split(",")) if n and n != "none"]


def otlp_http_only() -> bool:
    """Whether traces go by OTLP/HTTP alone, which processor/otlp.py
    encodes; any other exporter, protocol or credential hook takes the SDK's
    way."""
    return (
        exporter_names("traces") == ["otlp"]
        and otlp_protocol("traces") == "http/protobuf"
        and not os.environ.get("OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER")
    )


def otlp_protocol(signal: str) -> str:
    return (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()


def exporter_class(name: str, signal: str) -> Any:
    """The exporter class registered under ``name`` for ``signal``, by the
    entry points the SDK's own auto-configuration uses."""
    if name == "otlp":
        protocol = otlp_protocol(signal)
        if protocol not in _OTLP_BY_PROTOCOL:
            raise ValueError(f"unsupported OTLP protocol {protocol!r} for {signal}")
        name = _OTLP_BY_PROTOCOL[protocol]
    found = entry_points(group=f"opentelemetry_{signal}_exporter", name=name)
    if not found:
        raise ValueError(f"OTEL_{signal.upper()}_EXPORTER: no exporter named {name!r} installed")
    return next(iter(found)).load()


def _resource(default_service_name: str) -> Resource:
    resource = Resource.create()
    defaults: dict[str, str] = {}
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        defaults["service.name"] = default_service_name
    if "service.instance.id" not in resource.attributes:
        # Replicas must not merge into one series (Prometheus' instance label).
        defaults["service.instance.id"] = f"{socket.gethostname()}-{os.getpid()}"
    return resource.merge(Resource(defaults)) if defaults else resource
