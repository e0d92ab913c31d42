"""Where the services' own sockets listen."""

from __future__ import annotations

import socket

import pytest

from processor.listening import bind


def _connects(family: socket.AddressFamily, address: str, port: int) -> bool:
    with socket.socket(family) as client:
        return client.connect_ex((address, port)) == 0


@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason="no IPv6 on this host")
def test_empty_is_every_interface_of_both_families() -> None:
    with bind("", 0) as server:
        port = server.getsockname()[1]
        assert _connects(socket.AF_INET, "127.0.0.1", port)
        assert _connects(socket.AF_INET6, "::1", port)


@pytest.mark.parametrize(("host", "family"), [("localhost", None), ("127.0.0.1", socket.AF_INET)])
def test_a_name_or_an_address(host: str, family: socket.AddressFamily | None) -> None:
    with bind(host, 0) as server:
        assert family is None or server.family == family
        address, port = server.getsockname()[:2]
        assert _connects(server.family, address, port)


def test_a_name_that_does_not_resolve_is_an_oserror() -> None:
    with pytest.raises(OSError):
        bind("no-such-host.invalid", 0)
