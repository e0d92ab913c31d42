"""Listening TCP sockets, bound before a service takes any work: a port it
cannot have is then known at start, and said in one line rather than in a
traceback out of the service's task groups."""

from __future__ import annotations

import os
import socket


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (IPv6 if ``host`` is an IPv6
    address; port 0: one the OS picks). Raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


def why(exc: OSError) -> str:
    """What went wrong, without the address: the caller names it already
    (``socket.create_server`` appends it to ``strerror``)."""
    if exc.errno and not isinstance(exc, socket.gaierror):
        return os.strerror(exc.errno)
    return str(exc)
