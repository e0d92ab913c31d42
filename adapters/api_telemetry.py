"""The API's request spans: a SERVER span per request to a ``/v1`` route,
continuing the caller's ``traceparent``, made by Litestar's OpenTelemetry
middleware (opentelemetry-instrumentation-asgi) with the providers the API
was given; the spans and logs of the handler (a command's ``send`` span)
happen inside it.

The middleware goes on the ``/v1`` router, not on the app as Litestar's
OpenTelemetryPlugin puts it: there it would run before routing, where only
the raw path is known to name the span by, and the health routes, polled
every few seconds, would need excluding by pattern. On the router it runs
once the route is known, for its routes alone.
"""

from __future__ import annotations

from typing import Any

from litestar.enums import ScopeType
from litestar.middleware.base import DefineMiddleware
from litestar.plugins.opentelemetry import OpenTelemetryConfig
from litestar.types import Scope
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE

from processor.telemetry import Providers


def route_span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    """``POST /v1/charge-points/{charge_point_id}/commands/{action}``: by the
    route's template, not the path, which holds ids (a span name per
    charger would flood the trace UI's operations and any span metrics)."""
    route = scope["path_template"]
    return f"{scope.get('method', 'HTTP')} {route}", {HTTP_ROUTE: route}


class _Shared(DefineMiddleware):
    """Litestar deep-copies a router as it registers it; the providers in
    this definition (locks, an exporter process) are the service's own, to
    share, not copy."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _Shared:
        return self


def request_spans(providers: Providers) -> DefineMiddleware:
    """The middleware that traces (and measures) each request."""
    config = OpenTelemetryConfig(
        tracer_provider=providers.tracer_provider,
        meter_provider=providers.meter_provider,
        scope_span_details_extractor=route_span_details,
        # A span per ASGI message would only say the response was written.
        exclude_spans=["receive", "send"],
        scopes={ScopeType.HTTP},
    )
    return _Shared(config.middleware_class, config=config)
