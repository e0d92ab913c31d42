"""An OTLP/HTTP endpoint of the tests' own, standing in for a collector: it
keeps what services post to it and decodes it, so that a test checks what a
real export delivered, from its own process or from real services."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def values(attributes: list[KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


@dataclass(frozen=True)
class Exported:
    """A span as received, with the attributes of the resource it came from."""

    resource: dict[str, Any]
    span: Span

    @property
    def service(self) -> str:
        return str(self.resource.get("service.name", ""))


class Receiver:
    """Keeps what it is sent, by path, and wakes :meth:`until` on each POST."""

    def __init__(self) -> None:
        received: list[tuple[str, str, bytes]] = []
        self.received = received
        posted = self.posted = threading.Event()
        arrived = self._arrived = threading.Condition()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with arrived:
                    received.append((self.path, self.headers["Content-Type"], body))
                    arrived.notify_all()
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
        with self._arrived:
            return [body for p, _, body in self.received if p == path]

    def spans(self) -> list[Exported]:
        """Every span received so far, in arrival order."""
        return [
            Exported(values(list(rs.resource.attributes)), span)
            for body in self.bodies("/v1/traces")
            for rs in ExportTraceServiceRequest.FromString(body).resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]

    def metric_names(self, service: str) -> set[str]:
        """The names of the metrics ``service`` exported so far."""
        return {
            m.name
            for body in self.bodies("/v1/metrics")
            for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics
            if values(list(rm.resource.attributes)).get("service.name") == service
            for sm in rm.scope_metrics
            for m in sm.metrics
        }

    def until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until ``check()`` holds, re-checking as posts arrive; fail
        after ``timeout`` s saying ``what`` did not arrive."""
        with self._arrived:
            if not self._arrived.wait_for(check, timeout):
                raise TimeoutError(f"no {what} within {timeout} s")
