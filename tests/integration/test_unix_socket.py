"""REDIS_URL may name Redis's Unix socket (unix://), for a Redis on the same
host: TCP keepalive, which every client asks for on TCP, is not asked of it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from adapters.devstack import RedisServer
from adapters.gateway_outbound import Notifier, Pump
from processor.redis_io import connect

pytestmark = pytest.mark.anyio


async def test_services_connect_over_a_unix_socket() -> None:
    with tempfile.TemporaryDirectory() as directory:
        sock = Path(directory) / "redis.sock"
        with RedisServer(args=["--unixsocket", str(sock), "--unixsocketperm", "700"]):
            url = f"unix://{sock}?db=0"
            client = connect(url)
            try:
                assert await client.ping()
                # The gateway's invalidation listener builds its own pool.
                Notifier(url, Pump(client, requeue_ttl_s=60))
            finally:
                await client.aclose()
