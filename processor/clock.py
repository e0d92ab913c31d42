"""Timestamps as the system writes them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

_FIRST: Final = datetime.min.replace(tzinfo=UTC)
_LAST: Final = datetime.max.replace(tzinfo=UTC)


def utc(dt: datetime) -> datetime:
    """``dt`` in UTC; a naive datetime is taken to be UTC already. An instant
    before year 1 or after 9999 in UTC (``9999-12-31T23:59:59-05:00``, as a
    charger may send) is the nearest one a datetime holds, not an error."""
    if dt.tzinfo is UTC:  # most: decoded from "...Z"
        return dt
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:
        return _LAST if dt.year > 1 else _FIRST


# isoformat, not strftime: glibc's %Y does not pad years before 1000.
def wire(dt: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as OCPP recommends (at most 3 decimals)."""
    return utc(dt).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def stored(dt: datetime) -> str:
    """Fixed-width UTC text, so stored timestamps compare as strings do
    (the commit script's newest-wins writes rely on it)."""
    if dt.tzinfo is UTC:
        # Most timestamps, decoded from "...Z": "+00:00" becomes "Z", a
        # quarter of the time of the general path (a few calls a message).
        return dt.isoformat(timespec="microseconds")[:-6] + "Z"
    return utc(dt).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


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
