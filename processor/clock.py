"""Timestamps as the system writes them."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(dt: datetime) -> datetime:
    """``dt`` in UTC; a naive datetime is taken to be UTC already."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def wire(dt: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as OCPP recommends (at most 3 decimals)."""
    dt = utc(dt)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def stored(dt: datetime) -> str:
    """Fixed-width UTC text, so stored timestamps compare as strings do
    (the commit script's newest-wins writes rely on it)."""
    return utc(dt).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch_ms(dt: datetime) -> int:
    return int(utc(dt).timestamp() * 1000)


def parse(text: str | None) -> datetime | None:
    """An envelope's RFC 3339 timestamp, or None if absent or unreadable."""
    if not text:
        return None
    try:
        return utc(datetime.fromisoformat(text))
    except ValueError:
        return None
