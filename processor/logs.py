"""Log setup shared by every service: one JSON object per line on stderr.

Each line has ``time`` (UTC, RFC 3339 with milliseconds), ``level``,
``logger``, ``message`` and ``service``, plus ``trace_id`` and ``span_id``
when it was logged inside a recording span (or about a message whose trace
is known: ``extra=trace_fields(traceparent)``), and ``exception`` with the
traceback. Credentials are masked wherever they appear (a Redis URL's
password, ``password=`` and the like), so a setting logged in passing cannot
leak one.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec
from opentelemetry import trace

_encoder = msgspec.json.Encoder()
# scheme://user:password@  and  password=..., token: ..., Authorization: Bearer ...
_SECRETS = (
    # Up to the last "@" of the authority: a password may hold an unencoded "@".
    (re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):[^/\s]*@"), r"\1:***@"),
    (
        re.compile(
            r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|authorization)"
            r"(\s*[=:]\s*)(?:bearer\s+|basic\s+)?[^\s&,;'\"]+"
        ),
        r"\1\2***",
    ),
)


def redact(text: str) -> str:
    """``text`` with credentials masked."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def trace_fields(traceparent: bytes | str) -> dict[str, str]:
    """``extra`` for a record about a message: the trace and the span its
    W3C ``traceparent`` names; nothing if there is none."""
    text = traceparent.decode(errors="replace") if isinstance(traceparent, bytes) else traceparent
    if len(text) != 55 or not text.startswith("00-"):
        return {}
    return {"trace_id": text[3:35], "span_id": text[36:52]}


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module doc)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            "service": self._service,
        }  # fmt: skip
        trace_id = getattr(record, "trace_id", None)
        span_id = getattr(record, "span_id", None)
        if trace_id is None:
            sc = trace.get_current_span().get_span_context()
            if sc.is_valid:
                trace_id, span_id = f"{sc.trace_id:032x}", f"{sc.span_id:016x}"
        if trace_id is not None:
            line["trace_id"] = trace_id
            line["span_id"] = span_id
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exception"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return _encoder.encode(line).decode()


def setup(level: str, service: str) -> None:
    """Log ``level`` and above to stderr as JSON lines tagged ``service``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    logging.basicConfig(level=level.upper(), handlers=[handler])
