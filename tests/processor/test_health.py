"""The health app without a server or Redis: httpx calls the ASGI app."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket

import anyio
import httpx
import pytest

from adapters.devstack import free_port
from processor.health import HealthServer, health_app
from processor.types import Probe

pytestmark = pytest.mark.anyio


def probe_saying(*answers: str | None) -> Probe:
    """A probe giving ``answers`` in turn, then the last one forever."""
    left = list(answers)

    async def probe() -> str | None:
        return left.pop(0) if len(left) > 1 else left[0]

    return probe


def client(probe: Probe) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=health_app(probe)), base_url="http://health"
    )


async def test_ready_and_alive() -> None:
    async with client(probe_saying(None)) as c:
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        assert ready.headers["content-type"] == "application/json"
        alive = await c.get("/livez")
        assert alive.status_code == 200 and alive.json() == {"alive": True}
        head = await c.head("/readyz")
        assert head.status_code == 200 and head.content == b""


async def test_not_ready_says_why_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    why = "redis unreachable: Connection refused"
    async with client(probe_saying(why, why, None)) as c:
        with caplog.at_level(logging.INFO, "processor.health"):
            for _ in range(2):
                resp = await c.get("/readyz")
                assert resp.status_code == 503
                assert resp.json() == {"ready": False, "reason": why}
            assert (await c.get("/readyz")).status_code == 200
            # Alive whatever readiness says.
            assert (await c.get("/livez")).status_code == 200
    assert [r.getMessage() for r in caplog.records] == [f"not ready: {why}", "ready"]


async def test_a_failing_probe_is_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> str | None:
        raise ValueError("bug")

    async with client(broken) as c:
        with caplog.at_level(logging.ERROR, "processor.health"):
            resp = await c.get("/readyz")
    assert resp.status_code == 503
    assert resp.json() == {"ready": False, "reason": "probe failed: ValueError: bug"}
    assert caplog.records[0].exc_info is not None


async def test_reasons_are_redacted() -> None:
    async with client(probe_saying("redis error: redis://u:hunter2@db:6379 said no")) as c:
        resp = await c.get("/readyz")
    assert "hunter2" not in resp.text and "u:***@db" in resp.json()["reason"]


async def test_other_paths_and_methods() -> None:
    async with client(probe_saying(None)) as c:
        for path in ("/", "/healthz", "/readyz/", "/livez/x"):
            resp = await c.get(path)
            assert resp.status_code == 404 and resp.json() == {"error": "not found"}
        resp = await c.post("/readyz")
        assert resp.status_code == 405 and resp.headers["allow"] == "GET, HEAD"


async def test_port_zero_serves_nothing() -> None:
    server = HealthServer(probe_saying(None), 0)
    assert server.port == 0
    await server.run()  # returns at once


async def test_a_port_in_use_gives_way_to_a_free_one(caplog: pytest.LogCaptureFixture) -> None:
    """Another replica on the host has the port: this one serves elsewhere,
    says where, and answers there."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, "processor.health"):
            server = HealthServer(probe_saying(None), port, host="127.0.0.1")
        assert server.port not in (0, port)
        assert server.host == "127.0.0.1"
        [warning] = caplog.records
        assert warning.levelno == logging.WARNING
        said = warning.getMessage()
        assert f"health port {port} is taken on 127.0.0.1" in said
        assert "Address already in use" in said
        assert f"http://127.0.0.1:{server.port}" in said
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(server.run)
                    assert (await c.get("/livez")).json() == {"alive": True}
                    server.stop()


def test_an_address_the_host_lacks_stops_the_service() -> None:
    # 192.0.2.0/24 is for documentation: no host has it. Bound, never sent to.
    with pytest.raises(SystemExit, match="192.0.2.1:9101 .*OCPP_HEALTH_PORT"):
        HealthServer(probe_saying(None), 9101, host="192.0.2.1")


def test_a_port_without_the_right_stops_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests may run as root, who may bind any port: the refusal is simulated.
    def refused(address: tuple[str, int], **kwargs: object) -> socket.socket:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(socket, "create_server", refused)
    with pytest.raises(SystemExit, match=r"0.0.0.0:80 \(Permission denied\)"):
        HealthServer(probe_saying(None), 80)


async def test_served_by_uvicorn_until_stopped() -> None:
    """The real server in this event loop: it answers, leaves the signal
    handlers alone, and stop() ends run()."""
    before = signal.getsignal(signal.SIGTERM)
    server = HealthServer(probe_saying("starting", None), free_port(), host="127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    async with httpx.AsyncClient(base_url=base) as c:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.run)
                # The port listens from the constructor on: no wait for start-up.
                first = await c.get("/readyz")
                assert first.status_code == 503 and first.json()["reason"] == "starting"
                assert (await c.get("/readyz")).json() == {"ready": True}
                assert (await c.get("/livez")).status_code == 200
                assert signal.getsignal(signal.SIGTERM) is before
                server.stop()
    async with httpx.AsyncClient() as fresh:
        with pytest.raises(httpx.ConnectError):
            await fresh.get(f"{base}/livez")
