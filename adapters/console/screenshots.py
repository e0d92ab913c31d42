"""Screenshots of every console page, for the README: run against a stack
that ``make demo KEEP=1`` left up.

    python -m adapters.console.screenshots http://127.0.0.1:PORT TOKEN [docs/screenshots]

Drives Debian's chromium through Playwright (a dev dependency), logs in,
and writes one PNG per page: a laptop-sized window, and the overview and a
charger again on a phone-sized one.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from playwright.sync_api import Page, ViewportSize, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# We run as root with no network but loopback.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
LAPTOP: ViewportSize = {"width": 1366, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
# A command with an outcome (the charger may be busy, or slow to answer).
DONE = "#command-outcome:not([data-state=queued]):not([data-state=sent])"


def log_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/$"))


def shoot(base: str, token: str, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=LAPTOP, color_scheme="light")
        page = context.new_page()

        def save(name: str, full: bool = True) -> None:
            path = out / f"{name}.png"
            page.screenshot(path=str(path), full_page=full)
            written.append(path)

        page.goto(f"{base}/login")
        save("login", full=False)
        log_in(page, base, token)
        page.get_by_text("chargers online").wait_for()
        save("overview")
        page.goto(f"{base}/chargers")
        save("chargers")
        # A 1.6 charger, a command sent from its page and its reply.
        page.goto(f"{base}/chargers/LIVE-0001")
        page.get_by_label("Command", exact=True).select_option("GetConfiguration")
        page.get_by_role("button", name="Send GetConfiguration").click()
        page.locator(DONE).wait_for(timeout=40_000)
        page.reload()
        page.get_by_label("Command", exact=True).select_option("RemoteStartTransaction")
        page.get_by_role("textbox", name="idTag").fill("OPERATOR-1")
        page.get_by_role("button", name="Send RemoteStartTransaction").click()
        page.locator(DONE).wait_for(timeout=40_000)
        save("charger-ocpp16")
        page.goto(f"{base}/chargers/LIVE-0002")
        save("charger-ocpp201")
        page.goto(f"{base}/transactions")
        save("transactions")
        page.locator("table tbody th a").first.click()
        page.locator("#chart canvas").wait_for()
        save("transaction")
        page.goto(f"{base}/transactions?protocol=ocpp2.0.1")
        save("transactions-ocpp201")
        page.locator("table tbody th a").first.click()
        page.locator("#chart canvas").wait_for()
        save("session-ocpp201")
        page.goto(f"{base}/id-tags")
        for tag in ("FLEET-CARD-01", "FLEET-CARD-02", "LOST-CARD-07"):
            page.get_by_label("idTag", exact=True).fill(tag)
            page.get_by_role("button", name="Save").click()
            page.get_by_role("status").wait_for()
        page.get_by_role("button", name="Block LOST-CARD-07").click()
        page.get_by_role("status").wait_for()
        save("authorization")
        page.goto(f"{base}/dead-letters")
        save("dead-letters")
        page.goto(f"{base}/anomalies")
        save("anomalies")
        page.set_viewport_size(PHONE)
        page.goto(f"{base}/")
        page.get_by_text("chargers online").wait_for()
        save("phone-overview")
        page.goto(f"{base}/chargers/LIVE-0001")
        save("phone-charger", full=False)
        browser.close()
    return written


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) not in (2, 3):
        sys.exit(__doc__)
    out = Path(args[2] if len(args) == 3 else "docs/screenshots")
    for path in shoot(args[0].rstrip("/"), args[1], out):
        sys.stdout.write(f"{path}\n")


if __name__ == "__main__":
    main()
