"""Span records as an OTLP ``ExportTraceServiceRequest``, in protobuf wire
format, written directly.

Why not the SDK's encoder: it builds a ``ReadableSpan`` and then a protobuf
object per span and per attribute, some 50 µs a span, which at 10%
sampling cost the pipeline more CPU than the target allows. Our spans have
one fixed shape (a dozen attributes, at most a link, a status), and most
attributes repeat from span to span (the stream, the group, the action, the
charger), so each distinct key-value is encoded once and its bytes reused:
a span costs a few µs. The result is checked against the SDK's encoder by
``tests/telemetry/test_otlp.py``; the schema is
``opentelemetry/proto/trace/v1/trace.proto``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from processor.span_record import Attributes, SpanRecord

# Span.flags: the parent's is_remote is known (0x100) and true (0x200), as the SDK sets them.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_STATUS_ERROR = 2
_CACHE_LIMIT = 50_000  # distinct keys, or values of a key, kept encoded; then start over
_UNIQUE_AFTER = 1_000  # a key whose values missed this often is not cached any more

_double = struct.Struct("<d").pack
_fixed64 = struct.Struct("<Q").pack
_fixed32 = struct.Struct("<I").pack


def _varint_of(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Lengths and small numbers are most varints written: looked up, not computed.
_SMALL = tuple(_varint_of(n) for n in range(1 << 14))
# The key of a length-delimited field (wire type 2), by field number.
_TAGS = tuple(_varint_of(number << 3 | 2) for number in range(16))


def _varint(n: int) -> bytes:
    return _SMALL[n] if n < 16384 else _varint_of(n)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    n = len(payload)
    return _TAGS[number] + (_SMALL[n] if n < 16384 else _varint_of(n)) + payload


def _any_value(value: str | int | float | bool) -> bytes:
    if isinstance(value, bool):  # before int: bool is an int
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:  # no int64 holds it: its digits, rather than no span
            return _field(1, str(value).encode())
        return b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)  # int64, two's complement
    if isinstance(value, float):
        return b"\x21" + _double(value)
    return _field(1, value.encode())


class _Key:
    """One attribute key of spans: its encoded key, and the encoded
    attributes of its text and integer values seen before, while they repeat
    (past ``_UNIQUE_AFTER`` misses a key's values are all different, like
    message ids, and caching them is waste)."""

    __slots__ = ("head", "texts", "ints", "misses")

    def __init__(self, key: str) -> None:
        self.head = _field(1, key.encode())
        self.texts: dict[str, bytes] = {}
        self.ints: dict[int, bytes] = {}
        self.misses = 0

    def text(self, value: str) -> bytes:
        """A text value missed in ``texts``, encoded (and kept)."""
        encoded = _field(9, self.head + _field(2, _field(1, value.encode())))
        self._keep(self.texts, value, encoded)
        return encoded

    def other(self, value: int | float | bool) -> bytes:
        # Exact types: True == 1 == 1.0 as dict keys. Floats never: -0.0
        # == 0.0, and they rarely repeat.
        if type(value) is int:
            encoded = self.ints.get(value)
            if encoded is None:
                encoded = _field(9, self.head + _field(2, _any_value(value)))
                self._keep(self.ints, value, encoded)
            return encoded
        return _field(9, self.head + _field(2, _any_value(value)))

    def _keep(self, cache: dict[Any, bytes], value: object, encoded: bytes) -> None:
        if self.misses < _UNIQUE_AFTER:
            self.misses += 1
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[value] = encoded


class SpanEncoder:
    """Spans as ``ScopeSpans.spans`` fields, ready to be joined into a
    request by :func:`request`; keeps what it has encoded, to reuse."""

    def __init__(self) -> None:
        self._keys: dict[str, _Key] = {}
        self._heads: dict[tuple[str, int], bytes] = {}

    def resource(self, attributes: Mapping[str, str | int | float | bool]) -> bytes:
        """A ``Resource`` message's fields."""
        return b"".join(
            _field(1, _field(1, k.encode()) + _field(2, _any_value(v)))
            for k, v in attributes.items()
        )

    def attributes(self, attributes: Attributes) -> bytes:
        """A span's ``attributes`` fields."""
        keys = self._keys
        parts = []
        for k, v in attributes.items():
            key = keys.get(k)
            if key is None:
                if len(keys) >= _CACHE_LIMIT:
                    keys.clear()
                key = keys[k] = _Key(k)
            if isinstance(v, str):
                parts.append(key.texts.get(v) or key.text(v))
            else:
                parts.append(key.other(v))
        return b"".join(parts)

    def span(self, r: SpanRecord) -> bytes:
        head = self._heads.get((r.name, r.kind))
        if head is None:
            head = self._heads[r.name, r.kind] = _head(r.name, r.kind)
        return _span(
            r.trace_id, r.span_id, r.parent_id, head, r.start_ns, r.end_ns,
            self.attributes(r.attributes), r.links, r.error,
        )  # fmt: skip

    def shape(self, name: str, kind: int, constant: Attributes) -> SpanShape:
        """Spans named ``name`` of ``kind`` whose attributes start with
        ``constant``, encoded once."""
        return SpanShape(_head(name, kind), self.attributes(constant), self)


class SpanShape:
    """Spans of one name and kind whose attributes start with the same ones:
    what the hot paths encode their spans with, those attributes encoded
    once. ``span(...)`` is ``SpanEncoder.span`` of a record of this name and
    kind with those attributes first, then ``attributes``."""

    __slots__ = ("_head", "_constant", "encoder")

    def __init__(self, head: bytes, constant: bytes, encoder: SpanEncoder) -> None:
        self._head = head
        self._constant = constant
        self.encoder = encoder

    def span(
        self, trace_id: str, span_id: str, parent_id: str, start_ns: int, end_ns: int,
        attributes: bytes = b"", links: Sequence[str] = (), error: str = "",
    ) -> bytes:  # fmt: skip
        """``attributes`` as :meth:`SpanEncoder.attributes` encodes them."""
        return _span(trace_id, span_id, parent_id, self._head, start_ns, end_ns,
                     self._constant + attributes, links, error)  # fmt: skip


def _head(name: str, kind: int) -> bytes:
    # The proto's kinds start at INTERNAL = 1.
    return _field(5, name.encode()) + b"\x30" + _varint(kind + 1)


def _span(
    trace_id: str, span_id: str, parent_id: str, head: bytes, start_ns: int, end_ns: int,
    attributes: bytes, links: Sequence[str], error: str,
) -> bytes:  # fmt: skip
    parts = [
        b"\x0a\x10", bytes.fromhex(trace_id), b"\x12\x08", bytes.fromhex(span_id),
        b"\x22\x08" + bytes.fromhex(parent_id) if parent_id else b"",
        head, b"\x39", _fixed64(start_ns), b"\x41", _fixed64(end_ns), attributes,
    ]  # fmt: skip
    for link in links:
        parts.append(_link(link))
    if error:
        parts.append(_field(15, _field(2, error.encode()) + b"\x18" + _varint(_STATUS_ERROR)))
    else:
        parts.append(b"\x7a\x00")  # an empty (unset) status, as the SDK writes it
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent_id else 0)
    parts.append(b"\x85\x01" + _fixed32(flags))
    return _field(2, b"".join(parts))


_scopes: dict[str, bytes] = {}


def request(resource: bytes, by_scope: Mapping[str, Sequence[bytes]]) -> bytes:
    """An ``ExportTraceServiceRequest`` of one resource (its fields, as
    :meth:`SpanEncoder.resource` makes them) and spans by scope name (as
    :meth:`SpanEncoder.span` makes them)."""
    # Heads computed from lengths, then one join: each nested _field would
    # copy the spans (hundreds of kB) again, at ~0.1 µs a span a copy.
    parts = [b"", _field(1, resource)]  # parts[0]: the head, once its length is known
    for name, spans in by_scope.items():
        scope = _scopes.get(name)
        if scope is None:
            scope = _scopes[name] = _field(1, _field(1, name.encode()))
        parts += (_TAGS[2] + _varint(len(scope) + sum(map(len, spans))), scope, *spans)
    parts[0] = _TAGS[1] + _varint(sum(map(len, parts)))
    return b"".join(parts)


class Encoder:
    """Records to requests, for one resource."""

    def __init__(self, resource: Mapping[str, str | int | float | bool]) -> None:
        self._spans = SpanEncoder()
        self._resource = self._spans.resource(resource)

    def request(self, records: Sequence[SpanRecord]) -> bytes:
        by_scope: dict[str, list[bytes]] = {}
        for r in records:
            by_scope.setdefault(r.scope, []).append(self._spans.span(r))
        return request(self._resource, by_scope)


def _link(traceparent: str) -> bytes:
    """A link to the span a W3C traceparent names (remote, as links are)."""
    _, trace_id, span_id, _flags = traceparent.split("-")
    body = b"\x0a\x10" + bytes.fromhex(trace_id) + b"\x12\x08" + bytes.fromhex(span_id)
    return _field(13, body + b"\x35" + _fixed32(_HAS_IS_REMOTE | _IS_REMOTE))
