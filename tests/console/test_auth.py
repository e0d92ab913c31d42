"""The console's login, cookie and CSRF, through the app with no server
behind it (these routes read neither Redis nor PostgreSQL)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient

from adapters.api import ApiSettings, create_app
from adapters.console.auth import COOKIE, safe_next
from adapters.rate_limit import FailureLimiter

TOKEN = "t" * 24
# Secure cookies go back over https only.
BASE = "https://console.test"


@pytest.fixture
def client() -> Iterator[TestClient]:  # type: ignore[type-arg]
    app = create_app(ApiSettings(api_token=TOKEN), login_limiter=FailureLimiter(3, 60.0))
    with TestClient(app, base_url=BASE) as c:
        yield c


def csrf(client: TestClient) -> str:  # type: ignore[type-arg]
    page = client.get("/login")
    found = re.search(r'name="_csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def login(client: TestClient, token: str, **more: str) -> object:  # type: ignore[type-arg]
    return client.post("/login", data={"token": token, "_csrf_token": csrf(client), **more},
                       follow_redirects=False)  # fmt: skip


def test_pages_redirect_to_login_and_htmx_is_told_to(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.get("/chargers?q=x", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/chargers%3Fq%3Dx"
    r = client.get("/overview/live", headers={"hx-request": "true",
                   "hx-current-url": f"{BASE}/"})  # fmt: skip
    assert r.status_code == 401 and r.headers["hx-redirect"] == "/login?next=/"
    # Static files need no login.
    assert client.get("/static/console.css").status_code == 200


def test_a_wrong_token_is_refused_with_a_message_then_429(client: TestClient) -> None:  # type: ignore[type-arg]
    r = login(client, "wrong")
    assert r.status_code == 401 and "That is not the API token" in r.text  # type: ignore[attr-defined]
    assert COOKIE not in client.cookies
    login(client, "wrong")
    login(client, "wrong")
    r = login(client, TOKEN)  # blocked: a right token too, so blocking tells nothing
    assert r.status_code == 429 and r.headers["retry-after"]  # type: ignore[attr-defined]
    # The same limiter guards /v1.
    assert client.get("/v1/charge-points", headers={"authorization": f"Bearer {TOKEN}"}
                      ).status_code == 429  # fmt: skip


def test_login_sets_a_strict_cookie_and_logout_clears_it(client: TestClient) -> None:  # type: ignore[type-arg]
    r = login(client, TOKEN, next="/id-tags")
    assert r.status_code == 303 and r.headers["location"] == "/id-tags"  # type: ignore[attr-defined]
    cookie = r.headers["set-cookie"]  # type: ignore[attr-defined]
    assert cookie.startswith(f"{COOKIE}={TOKEN};")
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert flag in cookie
    token = csrf(client)
    r = client.post("/logout", data={"_csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert f'{COOKIE}="";' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]


def test_posts_without_the_csrf_token_are_refused(client: TestClient) -> None:  # type: ignore[type-arg]
    login(client, TOKEN)
    r = client.post("/id-tags", data={"id_tag": "X", "status": "Blocked"}, follow_redirects=False)
    assert r.status_code == 403
    r = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert r.status_code == 403


def test_a_wrong_cookie_is_counted_and_cleared(client: TestClient) -> None:  # type: ignore[type-arg]
    client.cookies.set(COOKIE, "guess")
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303 and COOKIE in r.headers["set-cookie"]


def test_pages_carry_a_strict_content_security_policy(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.get("/login")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("given", "kept"),
    [("/chargers?q=1", "/chargers?q=1"), ("//evil.example", "/"), ("/\\evil.example", "/"),
     ("https://evil.example/", "/"), ("", "/"), (None, "/")],
)  # fmt: skip
def test_only_local_paths_are_followed_after_login(given: str | None, kept: str) -> None:
    assert safe_next(given) == kept


def test_without_a_token_the_console_is_open() -> None:
    with TestClient(create_app(ApiSettings()), base_url=BASE) as c:
        r = c.get("/login", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/"
