"""Redis for the tests: ``REDIS_URL`` if set, else the testcontainers Redis
module when a Docker engine answers, else a private ``redis-server`` on a
free port. Fault tests that kill or restart Redis always get a private
server of their own (``private_redis``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from adapters.devstack import RedisServer


@pytest.fixture
def anyio_backend() -> str:
    # redis.asyncio runs on asyncio only.
    return "asyncio"


def _docker_reachable() -> bool:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        return False
    import docker

    try:
        client = docker.from_env(timeout=2)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis shared by the session; flushed before each test by ``redis_db``."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    backend = os.environ.get("OCPP_TEST_REDIS", "auto")
    if backend == "testcontainers" or (backend == "auto" and _docker_reachable()):
        from testcontainers.redis import RedisContainer

        image = os.environ.get("OCPP_TEST_REDIS_IMAGE", "redis:7")
        container: Any = RedisContainer(image)
        network_mode = os.environ.get("OCPP_TEST_DOCKER_NETWORK")
        if network_mode:
            container = container.with_kwargs(network_mode=network_mode)
        with container as c:
            if network_mode == "host":
                yield "redis://127.0.0.1:6379/0"
            else:
                yield f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[str]:
    """``redis_url``, emptied for this test."""
    client = redis_sync.Redis.from_url(redis_url)
    client.flushall()
    client.close()
    yield redis_url


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to kill and restart at will."""
    with RedisServer() as server:
        yield server
