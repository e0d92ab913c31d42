"""A finished, sampled span as plain data: what the hot paths make instead
of SDK spans, and what the exporter process is sent when it exports through
the SDK."""

from __future__ import annotations

import msgspec

Attributes = dict[str, str | int | float | bool]


class SpanRecord(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """A finished, sampled span as plain data, ids in lowercase hex. (Out of
    the garbage collector's sight: it holds only text and numbers, so it can
    be in no reference cycle, and the hot paths make many.)"""

    scope: str
    name: str
    kind: int  # SpanKind's value
    trace_id: str
    span_id: str
    parent_id: str  # "" for a root; else a remote parent's span id
    start_ns: int
    end_ns: int
    attributes: Attributes
    links: list[str] = []  # traceparents of linked spans
    error: str = ""  # the status description of a failed span
