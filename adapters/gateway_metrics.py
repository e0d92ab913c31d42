"""The gateway's metrics, read from counts it keeps anyway when the SDK
collects: nothing per frame or connection, with telemetry on or off."""

from __future__ import annotations

from opentelemetry import metrics

from adapters.gateway_inbound import Forwarder
from adapters.gateway_outbound import Pump

GATEWAY_SCOPE = "ocpp.gateway"


def observe(meter_provider: metrics.MeterProvider, pump: Pump, forwarder: Forwarder) -> None:
    meter = meter_provider.get_meter(GATEWAY_SCOPE)
    meter.create_observable_up_down_counter(
        "ocpp.gateway.connections", [lambda _: [metrics.Observation(len(pump.sessions))]],
        "{connection}", "chargers connected",
    )  # fmt: skip
    meter.create_observable_counter(
        "ocpp.gateway.frames", [lambda _: [metrics.Observation(forwarder.forwarded)]],
        "{frame}", "frames received from chargers and pushed onto ocpp:requests",
    )  # fmt: skip
