"""Limits on guessing chargers' Basic-auth passwords, kept apart from the
gateway's I/O: plain objects on an injected clock, driven by the handshake
(``adapters/gateway.py``) and by tests without a socket.

:class:`FailedLogins` counts credential failures per source. From the one
that makes ``max_failures`` within ``window_s`` of the source's first, the
source is refused for ``window_s`` without its credentials being checked,
so a guesser gets ``max_failures`` tries per window at most and learns
nothing from the refusals. A source is an IPv4 address or an IPv6 /64: a
single IPv6 host usually holds a whole /64, so counting its addresses one by
one would limit nothing. At most ``max_sources`` are tracked; past that the
one idle longest is forgotten (a refused attempt counts as activity, so a
source still hammering keeps its place).

:class:`LogBudget` caps the log lines about refusals, so a flood of
attempts does not become a flood of log lines.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

Clock = Callable[[], float]

MAX_SOURCES: Final = 10_000


def source(host: str) -> str:
    """The source an address counts under: an IPv4 address as it is (also
    one mapped into IPv6), an IPv6 address as its /64; anything else as given."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # without an IPv6 zone
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Source:
    started: float  # the window's first failure
    failures: int = 0
    refused_until: float = 0.0


class FailedLogins:
    """Failed credential checks per source; ``max_failures`` 0 turns it off.

    Call :meth:`retry_after` before checking a request's credentials and
    :meth:`failed` when they are wrong. Not thread-safe: the gateway calls
    it from its event loop only.
    """

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        *,
        max_sources: int = MAX_SOURCES,
        clock: Clock = time.monotonic,
    ) -> None:
        if window_s <= 0 or max_sources < 1:
            raise ValueError("window_s and max_sources must be positive")
        self.max_failures = max_failures
        self.window_s = window_s
        self._max_sources = max_sources
        self._clock = clock
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def retry_after(self, host: str) -> float | None:
        """Seconds until ``host``'s source may try again; None if it may now."""
        key = source(host)
        entry = self._sources.get(key)
        if entry is None:
            return None
        now = self._clock()
        if now < entry.refused_until:
            self._sources.move_to_end(key)
            return entry.refused_until - now
        if self._expired(entry, now):
            del self._sources[key]
        return None

    def failed(self, host: str) -> bool:
        """Count a failure of ``host``'s source; True if this one reached the
        limit, so that the source is refused from now on."""
        if self.max_failures <= 0:
            return False
        key = source(host)
        now = self._clock()
        entry = self._sources.get(key)
        if entry is None or self._expired(entry, now):
            entry = self._sources[key] = _Source(now)
            self._sources.move_to_end(key)
            self._make_room(now)  # never this one: it is at the busy end
        else:
            self._sources.move_to_end(key)
        entry.failures += 1
        if entry.failures >= self.max_failures and entry.refused_until <= now:
            entry.refused_until = now + self.window_s
            return True
        return False

    def _expired(self, entry: _Source, now: float) -> bool:
        return now >= entry.refused_until and now - entry.started >= self.window_s

    def _make_room(self, now: float) -> None:
        # Expired sources at the idle end go first, then the one idle longest.
        while self._sources and self._expired(next(iter(self._sources.values())), now):
            self._sources.popitem(last=False)
        while len(self._sources) > self._max_sources:
            self._sources.popitem(last=False)


class LogBudget:
    """At most ``lines`` log lines per ``interval_s``.

    :meth:`take` says whether a line may be written now and, when it may,
    how many were held back since the last one written, for it to say so.
    """

    def __init__(
        self, lines: int = 10, interval_s: float = 10.0, *, clock: Clock = time.monotonic
    ) -> None:
        self._lines = lines
        self._interval_s = interval_s
        self._clock = clock
        self._started = -interval_s
        self._used = 0
        self._held = 0

    def take(self) -> int | None:
        """None: leave this line out. Else the number of lines left out before it."""
        now = self._clock()
        if now - self._started >= self._interval_s:
            self._started, self._used = now, 0
        if self._used >= self._lines:
            self._held += 1
            return None
        self._used += 1
        held, self._held = self._held, 0
        return held
