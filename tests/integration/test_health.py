"""Liveness and readiness of the real services, as subprocesses: what a
container health check or an orchestrator sees."""

from __future__ import annotations

import re
import socket
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from adapters.devstack import RedisServer, Service, free_port, wait_for
from processor import keys

pytestmark = pytest.mark.slow

TIMEOUT = 20.0


def get(service: Service, path: str) -> httpx.Response | None:
    """The service's answer on its health port; None while it is not listening."""
    try:
        return httpx.get(f"http://127.0.0.1:{service.health_port}{path}", timeout=5)
    except httpx.TransportError:
        if not service.alive():
            raise RuntimeError(f"{service.module} exited") from None
        return None


def answers(service: Service, path: str, status: int) -> Any:
    """Wait until ``path`` answers ``status``; its JSON body."""
    last: list[httpx.Response] = []

    def check() -> bool:
        resp = get(service, path)
        last[:] = [resp] if resp is not None else []
        return resp is not None and resp.status_code == status

    wait_for(check, TIMEOUT, f"{service.module} {path} to answer {status}", interval=0.05)
    return last[0].json()


def start_all(redis_url: str) -> list[Service]:
    gateway_env = {"OCPP_GATEWAY_HOST": "127.0.0.1", "OCPP_GATEWAY_PORT": str(free_port())}
    return [
        Service("processor", redis_url, health_port=free_port()),
        Service("adapters", redis_url, health_port=free_port()),
        Service("adapters.gateway", redis_url, env=gateway_env, health_port=free_port()),
    ]


@pytest.fixture
def services(private_redis: RedisServer) -> Iterator[list[Service]]:
    """Processor, adapter and gateway on a Redis the test may stop; each
    must still exit 0 on SIGTERM."""
    started = start_all(private_redis.url)
    try:
        yield started
    finally:
        codes = [(s.module, s.terminate()) for s in started]
    assert all(code == 0 for _, code in codes), codes


def test_ready_when_redis_answers(services: list[Service]) -> None:
    for service in services:
        assert answers(service, "/readyz", 200) == {"ready": True}
        assert answers(service, "/livez", 200) == {"alive": True}
        resp = get(service, "/metrics")
        assert resp is not None and resp.status_code == 404


def test_not_ready_while_redis_is_down(services: list[Service], private_redis: RedisServer) -> None:
    for service in services:
        answers(service, "/readyz", 200)
    private_redis.stop()
    for service in services:
        body = answers(service, "/readyz", 503)
        assert body["ready"] is False
        assert body["reason"].startswith("redis unreachable: "), body
        # Down is not dead: nothing should restart the service for it.
        assert answers(service, "/livez", 200) == {"alive": True}
    private_redis.start()
    for service in services:
        assert answers(service, "/readyz", 200) == {"ready": True}


def test_processor_not_ready_until_its_group_exists(redis_db: str) -> None:
    """Writes paused, the processor cannot create its group: Redis answers,
    yet the processor is not ready until it can."""
    client = redis.Redis.from_url(redis_db)
    client.execute_command("CLIENT", "PAUSE", int(TIMEOUT * 1000), "WRITE")
    processor = Service("processor", redis_db, health_port=free_port())
    try:
        missing = f"consumer group {keys.GROUP} missing on {keys.INBOUND}"
        assert answers(processor, "/readyz", 503) == {"ready": False, "reason": missing}
        client.execute_command("CLIENT", "UNPAUSE")
        assert answers(processor, "/readyz", 200) == {"ready": True}
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
        client.close()
        assert processor.terminate() == 0


def test_a_taken_health_port_gives_way_to_a_free_one(redis_db: str) -> None:
    """What a second replica on a host meets: it keeps running, serving its
    probes on a port the OS picked, and its log says which."""
    with socket.create_server(("0.0.0.0", 0)) as taken, tempfile.TemporaryFile() as log:
        port = taken.getsockname()[1]
        service = Service("adapters", redis_db, health_port=port, log=log)
        try:
            said = re.compile(rf"health port {port} is taken .* on http://0\.0\.0\.0:(\d+) ")

            def logged() -> re.Match[str] | None:
                log.seek(0)
                return said.search(log.read().decode())

            wait_for(lambda: not service.alive() or logged(), TIMEOUT, "the warning")
            found = logged()
            assert found is not None, "the service exited"
            service.health_port = int(found[1])
            assert answers(service, "/readyz", 200) == {"ready": True}
        finally:
            assert service.terminate() == 0
