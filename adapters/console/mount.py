"""The console as parts of the ``ocpp-api`` app: its routers (guarded, with
CSRF checks and security headers), its static files, its templates, the
state it keeps. ``adapters/api.py``'s ``create_app`` mounts them beside /v1.

Choices, and why:

* Server-rendered HTML (Jinja2, autoescaped, undefined names an error) with
  htmx for the live parts: the pages work as plain links and forms, the
  server stays the one place that reads Redis and PostgreSQL, and no build
  step or client-side state is needed.
* Live parts poll (``hx-trigger="every 2s"``) rather than use server-sent
  events: every poll is one short request through the same guard, no
  connection is held per open tab on the API's workers, nothing in between
  (a proxy buffering responses) can stall it, and a rate such as messages
  per second needs a sampling interval anyway.
* A Content-Security-Policy allowing scripts from this origin only: no
  inline script anywhere (data for the chart and the command forms travels
  in escaped ``data-`` attributes), so injected markup could not run code.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Request, Router
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig
from litestar.types import BeforeRequestHookHandler, ExceptionHandlersMap

from adapters import api_queries as q
from adapters.console import views
from adapters.console.actions import ACTIONS
from adapters.console.auth import Gate, LoginRequired, auth_handlers, cookie_guard, login_redirect
from adapters.console.pages import (
    PAGES,
    error_page,
    failure_page,
    invalid_input_page,
    not_found_page,
)

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
CSRF_COOKIE = "ocpp_csrf"
CSRF_HEADER = "x-csrftoken"

_CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    # json-editor and uPlot set styles from script; htmx's indicator styles are off.
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "object-src 'none'",
])  # fmt: skip
_HEADERS = [
    ResponseHeader(name="Content-Security-Policy", value=_CSP),
    ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
    ResponseHeader(name="Referrer-Policy", value="same-origin"),
    # Pages hold live data and a CSRF token: never from a cache.
    ResponseHeader(name="Cache-Control", value="no-store"),
]


def templates(auth: bool, offline_after_s: float = views.OFFLINE_AFTER_S
              ) -> TemplateConfig[JinjaTemplateEngine]:  # fmt: skip
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(views.FILTERS)
    env.globals["auth"] = auth
    env.globals["csrf_header"] = CSRF_HEADER
    env.globals["online_legend"] = views.online_legend(offline_after_s)
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(env))


def csrf(token: str) -> CSRFConfig:
    """Double-submit: a signed random token in an HttpOnly cookie, echoed in
    each POST (form field or header). Signed with a key derived from the API
    token, so replicas behind one address agree; per process without one."""
    secret = secrets.token_hex(32) if not token else _derive(token)
    return CSRFConfig(secret=secret, cookie_name=CSRF_COOKIE, header_name=CSRF_HEADER,
                      cookie_secure=True, cookie_httponly=True, cookie_samesite="strict",
                      cookie_path="/")  # fmt: skip


def _derive(token: str) -> str:
    return hmac.new(token.encode(), b"ocpp-console csrf", hashlib.sha256).hexdigest()


@dataclass
class Console:
    """What ``create_app`` adds: route handlers (routers), the template
    config, and initial app state."""

    routers: list[Router]
    template_config: TemplateConfig[JinjaTemplateEngine]
    state: dict[str, Any] = field(default_factory=dict)


# What fails on a console page shows as a console page. Redis and
# PostgreSQL being unavailable are left to the app's handlers (RedisError
# and HistoryUnavailable: more specific than Exception, so they win).
_ERRORS: ExceptionHandlersMap = {
    LoginRequired: login_redirect,
    HTTPException: error_page,
    q.InvalidInput: invalid_input_page,
    q.NotFound: not_found_page,
    Exception: failure_page,
}


def presence_window(offline_after_s: float) -> BeforeRequestHookHandler:
    """A hook setting the online threshold for the request it runs before:
    every presence judged while serving it (in ``queries.py`` too) uses it."""

    # async: Litestar runs a sync hook on a worker thread, whose context
    # is not the handler's.
    async def hook(request: Request[Any, Any, Any]) -> None:
        views.offline_after.set(offline_after_s)

    return hook


def console(gate: Gate, offline_after_s: float = views.OFFLINE_AFTER_S) -> Console:
    """The console behind ``gate``; a charger is online while heard from
    within ``offline_after_s``."""
    shared: dict[str, Any] = {
        "include_in_schema": False,
        "middleware": [DefineMiddleware(CSRFMiddleware, config=csrf(gate.token))],
        "response_headers": _HEADERS,
        "exception_handlers": _ERRORS,
        "before_request": presence_window(offline_after_s),
    }
    pages = Router("/", route_handlers=[*PAGES, *ACTIONS],
                   guards=[cookie_guard(gate)] if gate.enabled else None, **shared)  # fmt: skip
    login = Router("/", route_handlers=auth_handlers(gate), **shared)
    static = create_static_files_router(
        "/static", directories=[STATIC], name="static", include_in_schema=False,
        # Vendor files change only with a new build; the page links them by name.
        cache_control=CacheControlHeader(max_age=3600),
    )  # fmt: skip
    return Console(
        routers=[pages, login, static],
        template_config=templates(gate.enabled, offline_after_s),
        state={"console_meter": views.RateMeter()},
    )
