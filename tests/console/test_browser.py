"""The operator console in a real browser: headless Chromium (Debian's,
driven by Playwright) against the stack as users run it (gateway, adapter,
processor, archiver, ``ocpp-api`` with a token) on private Redis and
PostgreSQL, with chargers from ``ocpp-sim`` and the ``ocpp`` package.

One stack and one browser for the module; each test has a browser context
(its own cookies) of its own. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import subprocess
import sys
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar
from urllib.request import urlopen

import pytest
import redis as redis_sync
import websockets
from ocpp.v16 import ChargePoint, call
from playwright.sync_api import Browser, Page, expect, sync_playwright
from websockets.typing import Subprotocol

from adapters.console.screenshots import CHROMIUM, CHROMIUM_ARGS
from adapters.devstack import Service, free_port, listening, wait_for, wipe_schema

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

T = TypeVar("T")
TOKEN = "console-test-token-0123456789"
WAIT_MS = 20_000


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """``coroutine``'s result, run on a thread of its own: Playwright's sync
    API keeps an event loop running on this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result(30)


@dataclass
class Stack:
    base: str
    ws: str
    redis_url: str


@pytest.fixture(scope="module")
def stack(redis_url: str, postgres_url: str) -> Iterator[Stack]:
    client = redis_sync.Redis.from_url(redis_url)
    client.flushall()
    client.close()
    run_async(wipe_schema(postgres_url))
    gateway, api = free_port(), free_port()
    services = [
        Service("adapters.gateway", redis_url,
                env={"OCPP_GATEWAY_HOST": "127.0.0.1", "OCPP_GATEWAY_PORT": str(gateway)}),
        Service("adapters", redis_url),
        Service("processor", redis_url, env={"OCPP_READ_BLOCK_MS": "200"}),
        Service("adapters.archiver", redis_url, args=["run"],
                env={"DATABASE_URL": postgres_url, "OCPP_MIGRATE": "true"}),
        Service("adapters.api", redis_url, script="ocpp-api",
                env={"OCPP_API_HOST": "127.0.0.1", "OCPP_API_PORT": str(api),
                     "OCPP_API_TOKEN": TOKEN, "DATABASE_URL": postgres_url}),
    ]  # fmt: skip
    try:
        wait_for(lambda: listening(gateway) and listening(api), 30, "the gateway and the API")
        yield Stack(f"http://127.0.0.1:{api}", f"ws://127.0.0.1:{gateway}", redis_url)
    finally:
        for s in services:
            s.terminate()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, stack: Stack) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    outside: list[str] = []
    # Every request the pages make stays on this server: no CDN.
    context.on("request", lambda r: None if r.url.startswith(stack.base) else outside.append(r.url))
    yield context.new_page()
    context.close()
    assert outside == []


def log_in(page: Page, stack: Stack, token: str = TOKEN) -> None:
    page.goto(f"{stack.base}/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()


def simulate(stack: Stack, prefix: str, protocol: str = "ocpp1.6", sessions: int = 0,
             linger: float = 90) -> subprocess.Popen[bytes]:  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.sim", "--url", stack.ws, "--chargers", "1",
         "--prefix", prefix, "--protocol", protocol, "--sessions", str(sessions),
         "--linger", str(linger), "--meter-values", "4", "--json", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop(sim: subprocess.Popen[bytes]) -> None:
    sim.terminate()
    sim.wait(30)


def test_a_wrong_token_is_refused_and_pages_stay_unreachable(page: Page, stack: Stack) -> None:
    log_in(page, stack, "not-the-token-at-all")
    expect(page.get_by_role("alert")).to_contain_text("That is not the API token")
    for path in ("/", "/chargers", "/transactions.csv", "/id-tags"):
        page.goto(f"{stack.base}{path}")
        expect(page).to_have_url(re.compile(r"/login\?next="))
    assert all(c["name"] != "ocpp_console" for c in page.context.cookies())


def test_a_charger_appears_when_it_boots(page: Page, stack: Stack) -> None:
    log_in(page, stack)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.goto(f"{stack.base}/chargers")
    row = page.get_by_role("row", name=re.compile("BOOT-0001"))
    expect(row).to_have_count(0)
    sim = simulate(stack, "BOOT")
    try:
        expect(row).to_be_visible()
        expect(row).to_contain_text("Online")
        expect(row).to_contain_text("OCPP 1.6")
    finally:
        stop(sim)


def open_charger(page: Page, charge_point_id: str) -> None:
    """Its page, from the list, once its scripts run (htmx must see the
    command picker change)."""
    page.get_by_role("link", name=charge_point_id).click()
    page.wait_for_url(f"**/chargers/{charge_point_id}")
    page.wait_for_load_state("load")


def send_form(page: Page, action: str) -> None:
    page.get_by_role("button", name=f"Send {action}").click()
    outcome = page.locator("#command-outcome[data-state=answered]")
    expect(outcome).to_be_visible()
    expect(outcome.locator("#command-status")).to_have_text("Accepted")
    expect(outcome.locator("#round-trip")).to_have_text(re.compile(r"^\d+ ms$"))


def test_remote_start_from_the_page_then_the_transaction_and_its_chart(
    page: Page, stack: Stack
) -> None:
    sim = simulate(stack, "V16")
    try:
        log_in(page, stack)
        page.goto(f"{stack.base}/chargers")
        open_charger(page, "V16-0001")
        page.get_by_label("Command", exact=True).select_option("RemoteStartTransaction")
        page.get_by_role("textbox", name="idTag").fill("OPERATOR-16")
        send_form(page, "RemoteStartTransaction")
        expect(page.locator("#command-reply")).to_contain_text('"status": "Accepted"')
        # The CALL we sent and the charger's answer, among its last frames.
        expect(page.locator("#frames")).to_contain_text("RemoteStartTransaction")
        expect(page.locator("#frames")).to_contain_text("CALLRESULT")
        # The session the charger started, once archived, from its charger's list.
        wait_for(lambda: reloaded_with(page, TRANSACTION_LINK), 20, "the transaction archived",
                 interval=0.5)  # fmt: skip
        page.locator(TRANSACTION_LINK).first.click()
        expect(page.get_by_role("heading", name=re.compile(r"Transaction #\d+"))).to_be_visible()
        expect(page.locator("#chart canvas")).to_be_visible()
        readings = int(page.locator(".tile", has_text="readings charted").locator(".figure")
                       .inner_text())  # fmt: skip
        assert readings >= 2
        expect(page.locator(".u-legend")).to_contain_text("Energy")
    finally:
        stop(sim)


TRANSACTION_LINK = "#txn-h ~ div table tbody a[href^='/transactions/']"


def reloaded_with(page: Page, selector: str) -> bool:
    """Whether ``selector`` is on the page once reloaded: for what the
    archiver writes in its own time, which no page polls for."""
    page.reload()
    return bool(page.locator(selector).count())


def test_request_start_to_a_201_station_from_its_page(page: Page, stack: Stack) -> None:
    sim = simulate(stack, "V201", "ocpp2.0.1")
    try:
        log_in(page, stack)
        page.goto(f"{stack.base}/chargers?protocol=ocpp2.0.1")
        open_charger(page, "V201-0001")
        expect(page.get_by_role("heading", name="Device model")).to_be_visible()
        page.get_by_label("Command", exact=True).select_option("RequestStartTransaction")
        form = page.locator("form#command")
        form.get_by_role("textbox", name="idToken").fill("OPERATOR-201")
        form.get_by_role("combobox", name="type").select_option("Central")
        form.get_by_role("textbox", name="remoteStartId").fill("7")
        send_form(page, "RequestStartTransaction")
        # The session it started (TransactionEvents), once archived, to its chart.
        wait_for(lambda: reloaded_with(page, SESSION_LINK), 20, "the session archived",
                 interval=0.5)  # fmt: skip
        page.locator(SESSION_LINK).first.click()
        expect(page.get_by_role("heading", name=re.compile(r"Session \S+"))).to_be_visible()
        expect(page.locator(".facts")).to_contain_text("OPERATOR-201")
        expect(page.get_by_role("cell", name="Started", exact=True)).to_be_visible()

        def charted() -> bool:  # meter values keep coming while it charges
            page.reload()
            return page.locator("#chart canvas").count() > 0

        wait_for(charted, 20, "the session's readings charted", interval=0.5)
        expect(page.locator(".u-legend")).to_contain_text("Energy")
    finally:
        stop(sim)


SESSION_LINK = "#txn-h ~ div table tbody a[href^='/sessions/']"


def test_csv_export_has_every_transaction_with_its_kwh(page: Page, stack: Stack) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "adapters.sim", "--url", stack.ws, "--chargers", "2",
         "--prefix", "CSV", "--sessions", "1", "--json", "--quiet"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    log_in(page, stack)

    def archived(charge_point_id: str) -> bool:
        page.goto(f"{stack.base}/transactions?charge_point_id={charge_point_id}&status=finished")
        return bool(page.locator("tbody a[href^='/transactions/']").count())

    # Each charger's session is archived in its own time: wait for both.
    wait_for(lambda: archived("CSV-0001") and archived("CSV-0002"), 20,
             "both sessions in PostgreSQL", interval=0.5)  # fmt: skip
    page.goto(f"{stack.base}/transactions")
    with page.expect_download() as download:
        page.get_by_role("button", name="Export CSV").click()
    text = download.value.path().read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    ours = [r for r in rows if r["charge_point_id"].startswith("CSV-")]
    assert len(ours) == 2
    for r in ours:
        assert r["active"] == "false"
        assert int(r["energy_wh"]) > 0
        assert Decimal(r["energy_kwh"]) == Decimal(r["energy_wh"]) / 1000


async def authorize(ws_url: str, tag: str) -> str:
    async with websockets.connect(f"{ws_url}/AUTH-CP", subprotocols=[Subprotocol("ocpp1.6")]) as ws:
        cp = ChargePoint("AUTH-CP", ws, response_timeout=10)
        reader = asyncio.create_task(cp.start())
        try:
            await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
            result = await cp.call(call.Authorize(id_tag=tag))
            return str(result.id_tag_info["status"])
        finally:
            reader.cancel()


def test_a_blocked_id_tag_is_refused_at_the_next_authorize(page: Page, stack: Stack) -> None:
    log_in(page, stack)
    page.goto(f"{stack.base}/id-tags")
    page.get_by_label("idTag", exact=True).fill("CARD-42")
    page.get_by_label("Status", exact=True).select_option("Accepted")
    page.get_by_role("button", name="Save").click()
    row = page.get_by_role("row", name=re.compile("CARD-42"))
    expect(row).to_contain_text("Accepted")
    assert run_async(authorize(stack.ws, "CARD-42")) == "Accepted"
    row.get_by_role("button", name="Block CARD-42").click()
    expect(page.get_by_role("status")).to_contain_text("CARD-42: blocked")
    expect(row).to_contain_text("Blocked")
    assert run_async(authorize(stack.ws, "CARD-42")) == "Blocked"
    row.get_by_role("button", name="Remove CARD-42").click()
    expect(row).to_have_count(0)


def wait_for_a_poll(page: Page, region: str) -> None:
    """Until the polled fragment ``region`` (an element id) has been
    replaced by its next poll's markup."""
    old = page.evaluate_handle(f"document.getElementById({region!r})")
    page.wait_for_function("old => !old.isConnected", arg=old)


def focused_id(page: Page) -> str:
    return str(page.evaluate("document.activeElement ? document.activeElement.id : ''"))


def test_the_focus_stays_where_it_was_across_polls(page: Page, stack: Stack) -> None:
    run_async(authorize(stack.ws, "ANY"))  # AUTH-CP boots, for the list
    log_in(page, stack)
    page.goto(f"{stack.base}/chargers")
    link = page.get_by_role("link", name="AUTH-CP", exact=True)
    link.focus()
    wait_for_a_poll(page, "charger-rows")
    assert focused_id(page) == "cp-AUTH-CP"
    expect(link).to_be_focused()
    page.goto(f"{stack.base}/")
    tile = page.locator("#tile-online")
    tile.focus()
    wait_for_a_poll(page, "overview")
    assert focused_id(page) == "tile-online"


PAGES = ["/", "/chargers", "/transactions", "/id-tags", "/dead-letters", "/anomalies",
         "/chargers/AUTH-CP"]  # fmt: skip


def test_pages_are_labelled_have_landmarks_and_fit_a_phone(page: Page, stack: Stack) -> None:
    run_async(authorize(stack.ws, "ANY"))  # AUTH-CP boots, for its page
    log_in(page, stack)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    for width in (1280, 390):
        page.set_viewport_size({"width": width, "height": 844})
        for path in PAGES:
            page.goto(f"{stack.base}{path}")
            expect(page.get_by_role("main")).to_have_count(1)
            expect(page.get_by_role("navigation", name="Main")).to_have_count(1)
            expect(page.get_by_role("heading", level=1)).to_have_count(1)
            unlabelled = page.evaluate("""() => Array.from(document.querySelectorAll(
                'input:not([type=hidden]), select, textarea')).filter(e => e.offsetParent !== null
                && !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                && !e.getAttribute('aria-labelledby')).map(e => e.outerHTML)""")
            assert unlabelled == [], f"{path}: {unlabelled}"
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{path} is {overflow}px wider than a {width}px screen"
    # Keyboard: the first Tab reaches the skip link, which leads to the content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()


def test_the_api_still_answers_bearer_requests(stack: Stack) -> None:
    with pytest.raises(Exception, match="401"):
        urlopen(f"{stack.base}/v1/charge-points", timeout=5)
