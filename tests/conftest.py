"""Redis for the tests: ``REDIS_URL`` if set, else per ``OCPP_TEST_REDIS``
(``auto``, ``testcontainers`` or ``private``) a container started by the
testcontainers Redis module or a private ``redis-server`` on a free port;
``auto`` takes the container when a Docker engine answers. Fault tests that
kill or restart Redis always get a private server of their own
(``private_redis``).

PostgreSQL likewise: ``DATABASE_URL`` if set (its ``public`` schema is wiped
before each test that uses it), else per ``OCPP_TEST_POSTGRES`` a container of
the testcontainers Postgres module or a private server (``PostgresServer``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis as redis_sync
from testcontainers.community.postgres import PostgresContainer
from testcontainers.community.redis import RedisContainer

from adapters.devstack import PostgresServer, RedisServer, free_port, wipe_schema


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


class HostNetworkRedisContainer(RedisContainer):
    """A ``RedisContainer`` on the host's network stack. Nothing is mapped
    there, so redis-server is told to listen on a free loopback port (6379
    may be taken on the host) and that port is the one to connect to, for
    the readiness ping as for the tests."""

    def __init__(self, image: str) -> None:
        super().__init__(image, port=free_port())
        self.ports.clear()  # nothing to publish: the engine would only warn
        self.with_kwargs(network_mode="host")
        self.with_command(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        )

    def get_container_host_ip(self) -> str:
        return "127.0.0.1"

    def get_exposed_port(self, port: int) -> int:
        return port


@contextmanager
def _container_redis() -> Iterator[str]:
    """A Redis container for the session (``OCPP_TEST_REDIS_IMAGE``,
    ``OCPP_TEST_DOCKER_NETWORK``), removed on exit; yields its URL."""
    image = os.environ.get("OCPP_TEST_REDIS_IMAGE", "redis:7")
    network_mode = os.environ.get("OCPP_TEST_DOCKER_NETWORK")
    if network_mode == "host":
        container: RedisContainer = HostNetworkRedisContainer(image)
    else:
        container = RedisContainer(image)
        if network_mode:
            container.with_kwargs(network_mode=network_mode)
    with container as c:
        yield f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(c.port)}/0"


def _use_container(variable: str) -> bool:
    """Whether ``variable`` (``OCPP_TEST_REDIS``, ``OCPP_TEST_POSTGRES``) asks
    for testcontainers: ``testcontainers``, or ``auto`` with an engine answering."""
    backend = os.environ.get(variable, "auto")
    if backend not in ("auto", "testcontainers", "private"):
        raise ValueError(f"{variable}={backend!r}: use auto, testcontainers or private")
    return backend == "testcontainers" or (backend == "auto" and _docker_reachable())


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis shared by the session; flushed before each test by ``redis_db``."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    if _use_container("OCPP_TEST_REDIS"):
        with _container_redis() as url:
            yield url
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


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL shared by the session; wiped before each test by ``postgres_db``."""
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    if _use_container("OCPP_TEST_POSTGRES"):
        image = os.environ.get("OCPP_TEST_POSTGRES_IMAGE", "postgres:16")
        with PostgresContainer(image, driver=None) as container:
            yield container.get_connection_url()
        return
    with PostgresServer() as server:
        yield server.url


@pytest.fixture
def postgres_db(postgres_url: str) -> str:
    """``postgres_url``, its ``public`` schema emptied for this test."""
    asyncio.run(wipe_schema(postgres_url))
    return postgres_url


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, to kill and restart at will."""
    with PostgresServer() as server:
        yield server
