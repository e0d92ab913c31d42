"""Who may use the HTTP API (issue 15, "secure by default").

Every ``/v1`` route (found by walking the app, so a route added later is
covered) wants the token, compared whole; an address that keeps guessing
gets 429, on a clock the test moves.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
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
    bearer_guard,
)
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
