"""The console's pages through the app (no token, as on loopback) on a
real Redis and PostgreSQL: what a bad query gets, the charger list's cap,
the online threshold the console is built with, the authorization list's
messages, the CSV's type."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis as redis_sync
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import TestClient
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from adapters.api import ApiSettings, create_app
from adapters.console import queries as cq
from adapters.console import views as v
from adapters.console.auth import Gate
from adapters.console.mount import console
from adapters.history_db import History
from adapters.rate_limit import FailureLimiter
from processor import clock, keys
from tests.adapters.history import write_history

Client = TestClient[Litestar]
# The CSRF cookie is Secure: it goes back over https only.
BASE = "https://console.test"
HTMX = {"hx-request": "true"}


@pytest.fixture
def client(redis_db: str, postgres_db: str) -> Iterator[Client]:
    asyncio.run(write_history(postgres_db))
    app = create_app(ApiSettings(redis_url=redis_db, database_url=postgres_db))
    with TestClient(app, base_url=BASE) as c:
        yield c


@pytest.fixture
def redis(redis_db: str) -> Iterator[redis_sync.Redis]:
    r = redis_sync.Redis.from_url(redis_db)
    yield r
    r.close()


def is_console_page(resp: httpx.Response, status: int) -> bool:
    """The console's error page (HTML, in its layout), not /v1's problem JSON."""
    return (
        resp.status_code == status
        and resp.headers["content-type"].startswith("text/html")
        and f"<h1>{status}</h1>" in resp.text
        and 'aria-label="Main"' in resp.text
    )


# --- bad query parameters -------------------------------------------------------------

BAD = [
    ("/transactions?end_day=9999-12-31", 400, "years 2000 to 2999"),
    ("/transactions?start_day=1999-12-31", 400, "years 2000 to 2999"),
    ("/transactions.csv?end_day=9999-12-31", 400, "years 2000 to 2999"),
    ("/transactions?before=99999999999999999999", 400, "before is a transaction id"),
    ("/transactions?before=2147483648", 400, "before is a transaction id"),
    ("/transactions?before=0", 400, "before is a transaction id"),
    ("/transactions?before=%C2%B2", 400, "before is a transaction id"),  # "²" is a digit to str
    ("/transactions/99999999999", 404, "there is no transaction #99999999999"),
    ("/transactions/0", 404, "there is no transaction #0"),
    ("/dead-letters?before=abc", 400, "before is a stream entry id"),
    ("/dead-letters?before=0-0", 400, "before is a stream entry id"),
    ("/dead-letters?before=18446744073709551616-0", 400, "before is a stream entry id"),
    ("/anomalies?before=abc", 400, "before is a stream entry id"),
    ("/transactions?protocol=ocpp2.0.1&before=zzz", 400, "before is not a cursor"),
]


@pytest.mark.parametrize(("path", "status", "message"), BAD)
def test_a_bad_query_gets_the_console_error_page(
    client: Client, path: str, status: int, message: str
) -> None:
    page = client.get(path)
    assert is_console_page(page, status), page.text
    assert message in html.unescape(page.text)
    # An htmx request gets the message alone, as text.
    fragment = client.get(path, headers=HTMX)
    assert fragment.status_code == status
    assert fragment.headers["content-type"].startswith("text/plain")
    assert fragment.text.startswith(f"{status}: ") and message in fragment.text


def test_good_cursors_still_page(client: Client, redis: redis_sync.Redis) -> None:
    for n in range(51):
        redis.xadd(keys.DEAD, {"reason": "poison", "charge_point_id": f"DL-{n:02d}"})
    first = client.get("/dead-letters")
    found = re.search(r'href="\?before=([0-9]+-[0-9]+)"', first.text)
    assert first.status_code == 200 and found is not None
    older = client.get("/dead-letters", params={"before": found.group(1)})
    assert older.status_code == 200
    assert "DL-00" in older.text and "DL-50" not in older.text
    assert client.get("/transactions", params={"before": "3"}).status_code == 200


def test_an_unexpected_failure_is_a_logged_console_page(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(cq, "stream_page", broken)
    with caplog.at_level(logging.ERROR):
        page = client.get("/dead-letters")
    assert is_console_page(page, 500)
    assert "secret internals" not in page.text and "the error is logged" in page.text
    assert any(r.exc_info and "secret internals" in str(r.exc_info[1]) for r in caplog.records)


def test_redis_unavailable_keeps_its_own_message(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(*args: object, **kwargs: object) -> object:
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(cq, "stream_page", down)
    page = client.get("/dead-letters")
    assert page.status_code == 503 and "Redis is unavailable" in page.text


# --- transactions -----------------------------------------------------------------------


def test_a_running_transaction_counts_energy_from_its_meter_start(client: Client) -> None:
    # Transaction 3: meter start 100 Wh, readings 200 and 300 Wh.
    page = client.get("/transactions/3")
    assert page.status_code == 200, page.text
    chart = json.loads(html.unescape(page.text.split('data-chart="')[1].split('"')[0]))
    assert chart["energy_kwh"] == [0.1, 0.2]
    text = html.unescape(page.text)
    assert "0.200 kWh" in text and "Energy since the transaction's meter start" in text


def test_csv_says_its_charset_once(client: Client) -> None:
    resp = client.get("/transactions.csv")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/csv; charset=utf-8"


# --- the charger list -------------------------------------------------------------------


def test_the_charger_list_shows_200_rows_and_filters_the_whole_fleet(
    client: Client, redis: redis_sync.Redis
) -> None:
    redis.sadd(keys.KNOWN_CHARGE_POINTS, *(f"CAP-{n:04d}" for n in range(205)))
    page = client.get("/chargers")
    links = re.findall(r'<a id="cp-(CAP-\d{4})" href="/chargers/', page.text)
    assert links == [f"CAP-{n:04d}" for n in range(200)]
    assert "Showing 200 of 205: search or filter to narrow" in page.text
    # Past the first 200, a search finds it; under the cap, no notice.
    found = client.get("/chargers", params={"q": "CAP-0204"}, headers=HTMX)
    assert re.findall(r'<a id="cp-(CAP-\d{4})"', found.text) == ["CAP-0204"]
    assert "Showing" not in found.text and "1 of 205 chargers match" in found.text


# --- the online threshold --------------------------------------------------------------


def seen_seconds_ago(redis: redis_sync.Redis, cp: str, seconds: float) -> None:
    at = clock.stored(datetime.now(UTC) - timedelta(seconds=seconds))
    redis.sadd(keys.CHARGE_POINTS, cp)
    redis.hset(keys.charge_point(cp), mapping={"last_boot": at, "last_seen": at})


def console_app(redis_url: str, offline_after_s: float) -> Litestar:
    """The console alone, built with ``offline_after_s``, with the state
    ``create_app``'s lifespan would give it (no PostgreSQL)."""
    built = console(Gate("", FailureLimiter(5, 60.0)), offline_after_s=offline_after_s)

    @asynccontextmanager
    async def clients(app: Litestar) -> AsyncIterator[None]:
        app.state.redis = Redis.from_url(redis_url)
        app.state.history = History("")
        try:
            yield
        finally:
            await app.state.redis.aclose()

    # logging_config None, as ocpp-api's: Litestar's own would set the root
    # logger to INFO for every later test in this process.
    return Litestar(route_handlers=built.routers, template_config=built.template_config,
                    state=State(built.state), lifespan=[clients],
                    logging_config=None)  # fmt: skip


def test_the_online_threshold_comes_from_the_console_built(
    redis_db: str, redis: redis_sync.Redis
) -> None:
    seen_seconds_ago(redis, "SEEN-100S", 100)
    with TestClient(console_app(redis_db, 60), base_url=BASE) as strict:
        rows = strict.get("/chargers", headers=HTMX).text
        assert '<span class="badge off">Offline</span>' in rows and "badge ok" not in rows
        assert "Online: heard from in the last 1 min." in rows
        tiles = strict.get("/overview/live").text
        assert re.search(r'id="tile-offline".*?</span>1</span>', tiles, re.S)
    with TestClient(console_app(redis_db, v.OFFLINE_AFTER_S), base_url=BASE) as default:
        rows = default.get("/chargers", headers=HTMX).text
        assert '<span class="badge ok">Online</span>' in rows
        assert "Online: heard from in the last 11 min." in rows
        assert "heard from in the last 11 min" in default.get("/").text


# --- the authorization list -------------------------------------------------------------


def csrf_token(client: Client) -> str:
    found = re.search(r'name="_csrf_token" value="([^"]+)"', client.get("/id-tags").text)
    assert found is not None
    return found.group(1)


def test_the_id_tag_list_shows_only_its_own_messages(client: Client) -> None:
    forged = client.get("/id-tags", params={"error": "Call +1 555 to unlock", "done": "hacked",
                                            "tag": "Your card"})  # fmt: skip
    assert "Call +1 555" not in forged.text and "hacked" not in forged.text
    assert 'class="alert' not in forged.text
    said = client.get("/id-tags", params={"done": "saved", "tag": "CARD-1"})
    assert "CARD-1: saved." in said.text


def test_a_refused_change_says_why_on_the_list(client: Client) -> None:
    token = csrf_token(client)
    refused = client.post("/id-tags", data={"id_tag": "X" * 21, "_csrf_token": token},
                          follow_redirects=False)  # fmt: skip
    assert refused.status_code == 400
    assert "an idTag has 1 to 20 characters" in html.unescape(refused.text)
    assert "<h1>Authorization list</h1>" in refused.text
    unknown = client.post("/id-tags/NOPE/block", data={"_csrf_token": token},
                          follow_redirects=False)  # fmt: skip
    assert unknown.status_code == 404 and "NOPE" in unknown.text
    saved = client.post("/id-tags", data={"id_tag": "CARD-2", "_csrf_token": token},
                        follow_redirects=False)  # fmt: skip
    assert saved.status_code == 303
    assert saved.headers["location"] == "/id-tags?done=saved&tag=CARD-2"
