"""REDIS_URL may name Redis's Unix socket (unix://), for a Redis on the same
host: TCP keepalive, which every client asks for on TCP, is not asked of it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest

from adapters.devstack import RedisServer
from adapters.gateway_outbound import Notifier, Pump
from processor.redis_io import connect, keepalive

pytestmark = pytest.mark.anyio


def test_keepalive_is_asked_of_tcp_only() -> None:
    assert keepalive("redis://127.0.0.1:6379/0") == {"socket_keepalive": True}
    assert keepalive("rediss://redis.example:6380/0") == {"socket_keepalive": True}
    assert keepalive("unix:///run/redis.sock?db=0") == {}
    assert keepalive("UNIX:///run/redis.sock") == {}  # redis-py reads the scheme in any case


class Tracked(Pump):
    """A pump that says when the notifier turned tracking on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on = anyio.Event()

    def notifications(self, on: bool) -> None:
        super().notifications(on)
        if on:
            self.on.set()


async def test_services_connect_over_a_unix_socket() -> None:
    with tempfile.TemporaryDirectory() as directory:
        sock = Path(directory) / "redis.sock"
        with RedisServer(args=["--unixsocket", str(sock), "--unixsocketperm", "700"]):
            url = f"unix://{sock}?db=0"
            client = connect(url)
            try:
                assert await client.ping()
                # The gateway's invalidation listener, on a connection of
                # its own, subscribes over the socket.
                pump = Tracked(client, requeue_ttl_s=60)
                notifier = Notifier(url, pump)
                with anyio.fail_after(10):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(notifier.run)
                        await pump.on.wait()
                        notifier.stop()
                assert notifier.tracking
            finally:
                await client.aclose()
