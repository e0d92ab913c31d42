"""Listening TCP sockets, bound before a service takes any work: a port it
cannot have is then known at start, and said in one line rather than in a
traceback out of the service's task groups."""

from __future__ import annotations

import ipaddress
import os
import socket


def bind(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (port 0: one the OS picks).
    Raises OSError.

    ``""`` is every interface, IPv6 too where the host has it; a name is
    its first address (one socket, so one address to give out)."""
    if not host:
        if socket.has_dualstack_ipv6():
            return socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True)
        return socket.create_server(("", port))
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return socket.create_server(address, family=family)


def why(exc: OSError) -> str:
    """What went wrong, without the address: the caller names it already
    (``socket.create_server`` appends it to ``strerror``)."""
    if exc.errno and not isinstance(exc, socket.gaierror):
        return os.strerror(exc.errno)
    return str(exc)


def loopback(address: str) -> bool:
    """Whether ``address``, an IP address (an IPv6 zone allowed), reaches
    this host only: 127.0.0.0/8, ``::1``, or one of those IPv4-mapped. The
    wildcards ``0.0.0.0`` and ``::`` are not, nor is anything not an address
    (a name must be resolved first)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
