"""Who may use the HTTP API (issue 15, "secure by default").

In process: every ``/v1`` route (found by walking the app, so a route added
later is covered) wants the token, compared whole; an address that keeps
guessing gets 429, on a clock the test moves. As a real ``ocpp-api``
process: where it listens with and without a token, what it refuses to
start with, and the rate limit over real connections from two addresses.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from adapters.api import ApiSettings, create_app
from adapters.api_problems import EXCEPTION_HANDLERS
from adapters.api_security import (
    LOGIN_FAILURES,
    LOGIN_WINDOW_S,
    MIN_TOKEN_LENGTH,
    UnsafeSetting,
    bearer_guard,
    exposed,
    listen_host,
)
from adapters.devstack import Service, free_port, listening, wait_for
from adapters.rate_limit import FailureLimiter
from tests.adapters.test_api import assert_problem

TOKEN = "s3cret-token-4f9a2c7e"
RIGHT = {"authorization": f"Bearer {TOKEN}"}
HEALTH = ("/livez", "/readyz", "/healthz")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def client(app: Litestar, address: str) -> httpx.AsyncClient:
    """A client of ``app`` in this event loop, connecting from ``address``."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://api")


def v1_requests(app: Litestar) -> list[tuple[str, str]]:
    """(method, path) for every method of every /v1 route, path parameters
    filled in with values of their type."""
    requests = []
    for route in app.routes:
        if not route.path.startswith("/v1/"):
            continue
        path = re.sub(r"\{\w+:int\}", "1", re.sub(r"\{\w+:str\}", "X", route.path))
        assert "{" not in path, f"a path parameter type this test cannot fill in: {route.path}"
        requests += [(method, path) for method in sorted(getattr(route, "methods", ()))]
    return requests


# --- the token, on every route -----------------------------------------------


@pytest.fixture
async def guarded(redis_db: str) -> AsyncIterator[AsyncTestClient[Any]]:
    # A limit no test here reaches: these count refusals, not rate limits.
    limiter = FailureLimiter(limit=100_000)
    app = create_app(ApiSettings(redis_url=redis_db, api_token=TOKEN), login_limiter=limiter)
    async with AsyncTestClient(app=app) as c:
        yield c


@pytest.mark.anyio
async def test_every_v1_route_refuses_a_missing_or_wrong_token(
    guarded: AsyncTestClient[Any],
) -> None:
    requests = v1_requests(guarded.app)
    # The walk found the routes (each also answers OPTIONS, guarded as well).
    assert {p for _, p in requests} >= {"/v1/charge-points", "/v1/id-tags/X", "/v1/commands"}
    assert {m for m, _ in requests} >= {"GET", "POST", "PUT", "DELETE", "OPTIONS"}
    for method, path in requests:
        for headers in ({}, bearer("x" * len(TOKEN))):
            resp = await guarded.request(method, path, headers=headers)
            assert_problem(resp, 401, "bearer token")
            assert resp.headers["www-authenticate"] == "Bearer", (method, path)
    for path in HEALTH:
        assert (await guarded.get(path)).status_code == 200, path
    assert (await guarded.get("/v1/charge-points", headers=RIGHT)).status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    "given",
    [
        TOKEN[:-1] + ("x" if TOKEN[-1] != "x" else "y"),  # the same length, last one differs
        "y" * len(TOKEN),  # the same length
        TOKEN[:-1],  # a prefix
        TOKEN[:1],
        TOKEN + "x",  # an extension
        TOKEN.upper(),
        "",
    ],
)
async def test_only_the_whole_token_is_accepted(guarded: AsyncTestClient[Any], given: str) -> None:
    assert_problem(await guarded.get("/v1/charge-points", headers=bearer(given)), 401)
    assert (await guarded.get("/v1/charge-points", headers=RIGHT)).status_code == 200


# --- guessing slowed down ----------------------------------------------------


@pytest.mark.anyio
async def test_an_address_guessing_gets_429_even_with_the_right_token(
    redis_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    limiter = FailureLimiter(LOGIN_FAILURES, LOGIN_WINDOW_S, clock=clock)
    app = create_app(ApiSettings(redis_url=redis_db, api_token=TOKEN), login_limiter=limiter)
    async with app.lifespan(), client(app, "192.0.2.8") as c, client(app, "192.0.2.9") as other:
        for n in range(LOGIN_FAILURES):
            wrong = bearer(f"guess-{n:016d}")
            assert_problem(await c.get(f"/v1/id-tags/T{n}", headers=wrong), 401)
        for headers in (RIGHT, {}):
            refused = await c.get("/v1/charge-points", headers=headers)
            assert_problem(refused, 429, "too many refused logins")
            assert refused.headers["retry-after"] == str(int(LOGIN_WINDOW_S))
        # Another address, and the health routes, are unaffected.
        assert (await other.get("/v1/charge-points", headers=RIGHT)).status_code == 200
        assert_problem(await other.get("/v1/charge-points"), 401)
        for path in HEALTH:
            assert (await c.get(path)).status_code == 200
        clock.now += LOGIN_WINDOW_S - 0.5
        refused = await c.get("/v1/charge-points", headers=RIGHT)
        assert_problem(refused, 429)
        assert refused.headers["retry-after"] == "1"
        clock.now += 0.5
        assert (await c.get("/v1/charge-points", headers=RIGHT)).status_code == 200

    # Two lines for ten refusals: the first, and the block; no secret in them.
    lines = [r.getMessage() for r in caplog.records if r.name == "api"]
    assert len(lines) == 3, lines  # and one for the one refusal from 192.0.2.9
    assert all(r.levelname == "WARNING" for r in caplog.records if r.name == "api")
    assert "refused login from 192.0.2.8 to GET /v1/id-tags/T0" in lines[0]
    assert f"refused {LOGIN_FAILURES} logins from 192.0.2.8" in lines[1]
    assert "GET /v1/id-tags/T9" in lines[1]
    assert "refused login from 192.0.2.9 to GET /v1/charge-points" in lines[2]
    assert TOKEN not in caplog.text and "guess-" not in caplog.text
    assert "authorization" not in caplog.text.lower()


@pytest.mark.anyio
async def test_refused_logins_from_many_addresses_cannot_flood_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()

    @get("/guarded", guards=[bearer_guard(TOKEN, FailureLimiter(clock=clock), logged_per_window=3)])
    async def guarded() -> str:
        return "ok"

    app = Litestar([guarded], exception_handlers=EXCEPTION_HANDLERS, logging_config=None)

    async def refused_from(address: str) -> None:
        async with client(app, address) as c:
            assert (await c.get("/guarded")).status_code == 401

    for n in range(10):
        await refused_from(f"192.0.2.{n}")
    lines = [r.getMessage() for r in caplog.records if r.name == "api"]
    assert len(lines) == 4, lines
    assert "not logging more" in lines[3]
    clock.now += LOGIN_WINDOW_S
    caplog.clear()
    await refused_from("198.51.100.1")
    assert len(caplog.records) == 1


# --- where it listens --------------------------------------------------------


def resolve(host: str) -> list[str]:
    names = {"lan.example": ["192.0.2.5"], "lo.example": ["127.0.0.1", "::1"],
             "mixed.example": ["127.0.0.1", "192.0.2.5"]}  # fmt: skip
    if host not in names:
        raise socket.gaierror(f"no such name {host}")
    return names[host]


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.8.9.10", "::1", "localhost", "LocalHost", "lo.example", "::ffff:127.0.0.1"],
)
def test_without_a_token_loopback_is_allowed(host: str) -> None:
    assert listen_host(host, "", insecure=False, resolve=resolve) == host
    assert not exposed(host, "", resolve)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.5", "lan.example", "mixed.example"])
def test_without_a_token_other_addresses_are_refused_unless_insecure(host: str) -> None:
    with pytest.raises(UnsafeSetting) as refused:
        listen_host(host, "", insecure=False, resolve=resolve)
    message = str(refused.value)
    assert "OCPP_API_TOKEN" in message and "OCPP_API_INSECURE" in message and host in message
    assert "\n" not in message
    assert listen_host(host, "", insecure=True, resolve=resolve) == host
    assert exposed(host, "", resolve) and not exposed(host, TOKEN, resolve)


def test_the_default_address_depends_on_the_token() -> None:
    assert listen_host("", "", insecure=False) == "127.0.0.1"
    assert listen_host("", "", insecure=True) == "127.0.0.1"
    assert listen_host("", TOKEN, insecure=False) == "0.0.0.0"
    # With a token any address goes, and a name is left to the server to resolve.
    assert listen_host("nowhere.example", TOKEN, insecure=False, resolve=resolve) == (
        "nowhere.example"
    )
    with pytest.raises(UnsafeSetting, match="does not resolve"):
        listen_host("nowhere.example", "", insecure=False, resolve=resolve)


def test_a_short_token_is_refused() -> None:
    with pytest.raises(UnsafeSetting, match=f"OCPP_API_TOKEN .* at least {MIN_TOKEN_LENGTH}"):
        listen_host("", "x" * (MIN_TOKEN_LENGTH - 1), insecure=False)
    assert listen_host("", "x" * MIN_TOKEN_LENGTH, insecure=False) == "0.0.0.0"


# --- the real thing ----------------------------------------------------------


def other_local_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    candidates = []
    with contextlib.suppress(OSError):
        candidates.append(socket.gethostbyname(socket.gethostname()))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # UDP: picks a route, sends nothing
            candidates.append(s.getsockname()[0])
        except OSError:
            pass
    return next((a for a in candidates if not a.startswith("127.")), None)


class Api:
    """``python -m adapters.api`` on a free port with ``env`` over an
    environment that sets none of the API's settings."""

    def __init__(self, redis_url: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.log = log
        settings = {"OCPP_API_HOST": "", "OCPP_API_TOKEN": "", "OCPP_API_INSECURE": "false",
                    "OCPP_API_PORT": str(self.port), "OCPP_LOG_LEVEL": "INFO", **env}  # fmt: skip
        with log.open("wb") as out:
            self.service = Service("adapters.api", redis_url, env=settings, log=out)

    def text(self) -> str:
        return self.log.read_text()

    def wait_listening(self) -> None:
        def up() -> bool:
            if not self.service.alive():
                raise RuntimeError(f"ocpp-api exited:\n{self.text()}")
            return "Uvicorn running" in self.text()

        wait_for(up, 30, "ocpp-api to listen")


@pytest.fixture
def api(redis_db: str, tmp_path: Path) -> Iterator[Any]:
    started: list[Api] = []

    def start(**env: str) -> Api:
        server = Api(redis_db, tmp_path / f"api-{len(started)}.log", **env)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.service.alive():
            assert server.service.terminate() == 0


def test_without_a_token_it_listens_on_loopback_only(api: Any) -> None:
    server = api()
    server.wait_listening()
    assert f"api listening on 127.0.0.1:{server.port} (authentication off, loopback only" in (
        server.text()
    )
    resp = httpx.get(f"http://127.0.0.1:{server.port}/v1/charge-points", timeout=10)
    assert resp.status_code == 200
    other = other_local_address()
    if other is not None:
        assert not listening(server.port, other), f"reachable on {other}"


@pytest.mark.parametrize(
    ("env", "fragments"),
    [
        ({"OCPP_API_HOST": "0.0.0.0"}, ("OCPP_API_HOST=0.0.0.0", "OCPP_API_INSECURE")),
        ({"OCPP_API_HOST": "::"}, ("OCPP_API_HOST=::", "OCPP_API_INSECURE")),
        ({"OCPP_API_TOKEN": "short-token"}, ("at least 16",)),
    ],
)
def test_it_refuses_to_start_exposed_or_with_a_short_token(
    api: Any, env: dict[str, str], fragments: tuple[str, ...]
) -> None:
    server = api(**env)
    assert server.service.process.wait(30) == 2
    [line] = server.text().splitlines()
    assert line.startswith("ocpp-api: error: OCPP_API_TOKEN") or line.startswith(
        "ocpp-api: error: OCPP_API_HOST"
    )
    assert "OCPP_API_TOKEN" in line
    for fragment in fragments:
        assert fragment in line


def test_insecure_listens_everywhere_and_says_so_once(api: Any) -> None:
    server = api(OCPP_API_HOST="0.0.0.0", OCPP_API_INSECURE="1")
    server.wait_listening()
    warnings = [line for line in server.text().splitlines() if "OCPP_API_INSECURE" in line]
    assert len(warnings) == 1 and '"level":"WARNING"' in warnings[0].replace(" ", "")
    assert (
        f"anyone who can reach 0.0.0.0:{server.port} can send commands to chargers" in (warnings[0])
    )
    other = other_local_address()
    if other is not None:
        assert listening(server.port, other)


def test_with_a_token_it_listens_everywhere_and_slows_guessing(api: Any) -> None:
    server = api(OCPP_API_TOKEN=TOKEN)
    server.wait_listening()
    assert f"api listening on 0.0.0.0:{server.port} (authentication on" in server.text()
    other = other_local_address()
    if other is not None:
        assert listening(server.port, other)
    base = f"http://127.0.0.1:{server.port}"
    # Loopback is 127.0.0.0/8: 127.0.0.2 is another client address.
    guesser = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10)
    with guesser, httpx.Client(timeout=10) as honest:
        for n in range(LOGIN_FAILURES):
            # A new X-Forwarded-For each time changes nothing: the client is
            # the peer, 127.0.0.2, whatever it says it forwards for.
            headers = {**bearer(f"g{n}"), "x-forwarded-for": f"198.51.100.{n}"}
            assert_problem(guesser.get(f"{base}/v1/charge-points", headers=headers), 401)
        refused = guesser.get(f"{base}/v1/charge-points",
                              headers={**RIGHT, "x-forwarded-for": "203.0.113.9"})  # fmt: skip
        assert_problem(refused, 429, "too many refused logins")
        assert 0 < int(refused.headers["retry-after"]) <= LOGIN_WINDOW_S
        assert honest.get(f"{base}/v1/charge-points", headers=RIGHT).status_code == 200
        assert guesser.get(f"{base}/healthz").status_code == 200
    wait_for(lambda: "refused 10 logins from 127.0.0.2" in server.text(), 10, "the block's log")
    assert "refused login from 127.0.0.2 to GET /v1/charge-points" in server.text()
    assert TOKEN not in server.text()


def test_help_names_the_insecure_switch() -> None:
    out = subprocess.run([sys.executable, "-m", "adapters.api", "--help"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert "--api-insecure" in out and "OCPP_API_INSECURE" in out


def test_x_forwarded_for_does_not_make_a_new_client(api: Any) -> None:
    # uvicorn trusts the header from 127.0.0.1 unless told not to: a
    # guesser there could then name a new address for every guess.
    server = api(OCPP_API_TOKEN=TOKEN)
    server.wait_listening()
    base = f"http://127.0.0.1:{server.port}"
    with httpx.Client(timeout=10) as guesser:
        for n in range(LOGIN_FAILURES):
            headers = {**bearer(f"x{n}"), "x-forwarded-for": f"198.51.100.{n}"}
            assert_problem(guesser.get(f"{base}/v1/charge-points", headers=headers), 401)
        fresh = {**RIGHT, "x-forwarded-for": "203.0.113.9"}
        assert_problem(guesser.get(f"{base}/v1/charge-points", headers=fresh), 429)
    # Blocked as 127.0.0.1, the peer, not as any address it named.
    wait_for(lambda: "refused 10 logins from 127.0.0.1" in server.text(), 10, "the block's log")
