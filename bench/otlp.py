"""Encoding spans for OTLP: ours (processor/otlp.py, what the services do
with each sampled span) against the SDK's path (a ReadableSpan, then the
OTLP exporter's encoder and serialisation), on the processor's spans.

    .venv/bin/python -m bench.otlp            # 20,000 spans, best of 5
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.resources import Resource

from processor.otlp import Encoder
from processor.span_exporter import _Replay
from processor.span_record import SpanRecord

RESOURCE = {"service.name": "ocpp-processor", "service.instance.id": "bench-1"}


def processor_span(n: int) -> SpanRecord:
    """A span as the processor records one for a Heartbeat."""
    now = time.time_ns()
    return SpanRecord(
        "ocpp.processor", "process ocpp:inbound", 4, f"{random.getrandbits(128):032x}",
        f"{random.getrandbits(64):016x}", f"{random.getrandbits(64):016x}", now, now + 250_000,
        {"messaging.system": "redis", "messaging.destination.name": "ocpp:inbound",
         "messaging.consumer.group.name": "processors", "messaging.operation.name": "process",
         "messaging.operation.type": "process", "messaging.message.id": f"1700000000000-{n}",
         "ocpp.charge_point_id": f"CP{n % 100}", "ocpp.message_type": 2,
         "ocpp.message_id": f"m{n}", "ocpp.action": "Heartbeat", "ocpp.outcome": "result"},
    )  # fmt: skip


class _Collect(sdk_trace.SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[sdk_trace.ReadableSpan] = []

    def on_end(self, span: sdk_trace.ReadableSpan) -> None:
        self.spans.append(span)


def sdk(records: Sequence[SpanRecord]) -> bytes:
    collect = _Collect()
    _Replay([collect], Resource(RESOURCE)).record(records)
    return encode_spans(collect.spans).SerializeToString()


_ENCODER = Encoder(RESOURCE)


def ours(records: Sequence[SpanRecord]) -> bytes:
    # One encoder for all batches, as the exporter process keeps one.
    return _ENCODER.request(records)


def best_us(encode: Callable[[Sequence[SpanRecord]], bytes], records: list[SpanRecord],
            repeats: int) -> float:  # fmt: skip
    """Best time per span of ``repeats`` runs, in batches of 512 as exported."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(0, len(records), 512):
            encode(records[i : i + 512])
        best = min(best, time.perf_counter() - started)
    return 1e6 * best / len(records)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.otlp", description=__doc__)
    p.add_argument("--spans", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    records = [processor_span(n) for n in range(args.spans)]
    assert len(ours(records[:512])) > 0 and len(sdk(records[:512])) > 0
    theirs_us = best_us(sdk, records, args.repeats)
    ours_us = best_us(ours, records, args.repeats)
    print(f"{args.spans:,} processor spans, batches of 512, best of {args.repeats}")
    print(f"  SDK (ReadableSpan + OTLP encoder): {theirs_us:6.1f} µs a span")
    print(f"  ours (processor/otlp.py):          {ours_us:6.1f} µs a span"
          f"  ({theirs_us / ours_us:.1f}x faster)")  # fmt: skip


if __name__ == "__main__":
    main()
