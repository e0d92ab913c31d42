"""W3C trace context as text, and the sampling decisions the hot paths make
themselves instead of starting a span per message (the module
doc of processor/telemetry.py says why).
"""

from __future__ import annotations

import random
import re

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk import metrics as sdk_metrics
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

TRACE_FIELD = "tp"  # stream entry field holding the message's traceparent
PROCESS_SPAN = "process"
ROOT = Context()  # an empty context: a span started in it is a root
SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def tracing(tracer: trace.Tracer) -> bool:
    """Whether spans from ``tracer`` can be recorded at all."""
    return isinstance(tracer, sdk_trace.Tracer)


def metering(meter: metrics.Meter) -> bool:
    return isinstance(meter, sdk_metrics.Meter)


# -- trace context as text ---------------------------------------------------

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def span_context(traceparent: str | bytes) -> SpanContext | None:
    """The remote span context a W3C ``traceparent`` names, or None if it
    is not a valid version-00 one."""
    text = traceparent.decode(errors="replace") if isinstance(traceparent, bytes) else traceparent
    m = _TRACEPARENT.fullmatch(text)
    if m is None:
        return None
    trace_id, span_id = int(m[1], 16), int(m[2], 16)
    if not (trace_id and span_id):
        return None
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(m[3], 16)))


def traceparent(sc: SpanContext) -> str:
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags) & 0xFF:02x}"


def parent_context(sc: SpanContext | None) -> Context:
    """A context whose parent is ``sc``; the empty (root) one for None."""
    return ROOT if sc is None else trace.set_span_in_context(NonRecordingSpan(sc), ROOT)


SAMPLED_FLAGS = frozenset(f"{n:02x}".encode() for n in range(256) if n & 1)


def follows_parent(tracer: trace.Tracer) -> bool:
    """Whether ``tracer``'s sampler drops every child of a remote parent that
    was not sampled, as the ``parentbased_*`` samplers do: then such a
    message needs no span at all. Asked of the sampler, not assumed."""
    if not isinstance(tracer, sdk_trace.Tracer):
        return False
    unsampled = parent_context(SpanContext(1, 1, is_remote=True, trace_flags=TraceFlags(0)))
    # Trace id 1 is below any ratio's bound: a ratio sampler would keep it.
    result = tracer.sampler.should_sample(unsampled, 1, PROCESS_SPAN, SpanKind.CONSUMER)
    return result.decision is Decision.DROP


def sampled(
    tracer: trace.Tracer, context: Context, trace_id: int, name: str, kind: SpanKind
) -> bool:
    """The sampler's decision for a span ``tracer`` would start."""
    if not isinstance(tracer, sdk_trace.Tracer):
        return False
    decision = tracer.sampler.should_sample(context, trace_id, name, kind).decision
    return decision is Decision.RECORD_AND_SAMPLE


def random_ids() -> tuple[int, int]:
    """A new (trace id, span id), never zero."""
    return random.getrandbits(128) or 1, random.getrandbits(64) or 1


def new_span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"
