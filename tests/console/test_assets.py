"""Every asset the console's pages name is ours, served from /static and
present: no CDN, nothing fetched from another site at run time."""

from __future__ import annotations

import re

from adapters.console.mount import STATIC, TEMPLATES

REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"'{]+)["']""")


def test_templates_reference_local_assets_only() -> None:
    found = []
    for template in TEMPLATES.glob("*.html"):
        for ref in REFERENCE.findall(template.read_text()):
            found.append(ref)
            assert not re.match(r"^(?:[a-z]+:)?//", ref), f"{template.name}: {ref}"
            if ref.startswith("/static/"):
                assert (STATIC / ref.removeprefix("/static/")).is_file(), f"missing: {ref}"
    assert "/static/vendor/htmx.min.js" in found and "/static/vendor/jsoneditor.js" in found
    assert "/static/vendor/uPlot.iife.min.js" in found and "/static/vendor/pico.min.css" in found


def test_our_own_css_and_js_load_nothing_from_elsewhere() -> None:
    for name in ("console.css", "console.js"):
        text = (STATIC / name).read_text()
        assert not re.search(r"https?://|url\(\s*['\"]?//|@import", text), name
