"""Slowing down guessing: failures counted per client, in bounded memory.

:class:`FailureLimiter` is plain code on an injected clock, with no I/O and
no framework: a guard (the API's bearer guard; the gateway's Basic auth
could use the same) asks :meth:`FailureLimiter.retry_after` before it
checks a credential and reports a wrong one with
:meth:`FailureLimiter.failed`. After ``limit`` failures within ``window_s``
seconds a client is blocked for ``window_s`` seconds from its last counted
failure, whatever it sends: a right credential too, so the block tells a
guesser nothing. Successes are not reported and do not count. :class:`LogBudget` caps the
log lines about refusals, so a flood of them cannot flood the log.

A client is keyed by :func:`client_key`: its IPv4 address, or the /64 an
IPv6 address is in (one host commonly holds a whole /64, so counting single
IPv6 addresses would let it guess on). Behind a reverse proxy every client
is the proxy; nothing here trusts ``X-Forwarded-For``.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True)
class Failure:
    """What one reported failure did: the ``count`` of failures in the
    client's window (1 for the first, which opens it), and whether it
    ``blocked`` the client (exactly once per window: when count reaches the
    limit)."""

    count: int
    blocked: bool


@dataclass
class _Window:
    opened: float
    count: int = 0
    blocked_until: float = 0.0


class FailureLimiter:
    """Counts failures per key (a client address) in windows of ``window_s``
    seconds, each opened by a key's first failure; ``limit`` failures in one
    block the key for ``window_s`` seconds. At most ``max_keys`` keys are
    kept: beyond that the one whose last failure is oldest is forgotten.
    ``clock`` gives seconds (``time.monotonic`` by default)."""

    def __init__(
        self,
        limit: int = 10,
        window_s: float = 60.0,
        max_keys: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        if limit < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("limit, window_s and max_keys must be positive")
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        # Least recently failing first, so the oldest is the one dropped.
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def retry_after(self, key: str) -> float:
        """Seconds until ``key`` may try again; 0 if it is not blocked. A
        blocked key asking again counts as recent: a flood of other clients
        cannot push out one that is still guessing."""
        window = self._windows.get(key)
        if window is None:
            return 0.0
        wait = max(0.0, window.blocked_until - self.clock())
        if wait > 0:
            self._windows.move_to_end(key)
        return wait

    def failed(self, key: str) -> Failure:
        """Count a failure of ``key``."""
        now = self.clock()
        window = self._windows.pop(key, None)
        if window is None or (now >= window.blocked_until and now - window.opened >= self.window_s):
            window = _Window(opened=now)
        window.count += 1
        blocked = window.count == self.limit
        if blocked:
            window.blocked_until = now + self.window_s
        self._windows[key] = window
        if len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)
        return Failure(window.count, blocked)


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


def client_key(host: str | None) -> str:
    """The key a client is counted under: its IPv4 address, the /64 of an
    IPv6 one (an IPv4-mapped one as IPv4), anything else as it is
    (``"unknown"`` for none: a Unix socket)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
