"""Who may use the console: the API token, kept in a cookie after a login.

With ``OCPP_API_TOKEN`` set, every console page wants the cookie
:data:`COOKIE` holding that token (HttpOnly, Secure, SameSite=Strict,
Path=/), compared in constant time as the /v1 bearer guard compares its
header. A page asked for without it redirects to ``/login`` (an htmx
request is told to, with ``HX-Redirect``). A refused login, and a cookie
holding a wrong token (then cleared), count against the per-address
limiter the bearer guard uses, so the console is no faster a way to guess
the token: past the limit the address gets 429 here as there. Without a
token (loopback-only dev mode) the console is open, as /v1 is.

State-changing requests carry a CSRF token besides (``mount.py``):
SameSite=Strict keeps the cookie off other sites' requests, but not off a
sibling subdomain's, and in dev mode there is no cookie at all.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

import msgspec
from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Body, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from adapters.rate_limit import FailureLimiter, client_key

COOKIE = "ocpp_console"
LOGIN = "/login"


class LoginRequired(NotAuthorizedException):
    """Raised by the guard for a console page asked for without a valid cookie."""


@dataclass(frozen=True)
class Gate:
    """The token pages want (empty: no login) and the failure limiter
    shared with the /v1 bearer guard."""

    token: str
    limiter: FailureLimiter

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def retry_after(self, address: str | None) -> int:
        """Whole seconds the address must wait; 0 if it is not blocked."""
        return math.ceil(self.limiter.retry_after(client_key(address)))

    def failed(self, address: str | None) -> None:
        self.limiter.failed(client_key(address))


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site, else ``/`` (an
    open redirect to ``//evil.example`` or ``/\\evil.example`` is refused)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return target


def _address(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    return connection.client.host if connection.client else None


def cookie_guard(gate: Gate) -> Any:
    """A guard letting through requests whose cookie holds the token."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        wait = gate.retry_after(_address(connection))
        if wait > 0:  # as the bearer guard: blocked whatever it sends
            raise TooManyRequestsException(
                detail=f"too many refused logins from this address; try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        given = connection.cookies.get(COOKIE)
        if gate.matches(given):
            return
        if given is not None:  # a guess, or a token since rotated: counted, then cleared
            gate.failed(_address(connection))
        raise LoginRequired(detail="log in with the API token")

    return guard


def login_redirect(request: Request[Any, Any, Any], exc: LoginRequired) -> Response[Any]:
    """To the login page, then back here; an htmx request redirects the
    whole page rather than swapping the login form into a fragment."""
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.headers.get("hx-request"):
        back = request.headers.get("hx-current-url", "/")
        target = f"{LOGIN}?next={quote(safe_next(_path_of(back)))}"
        response: Response[Any] = Response("", status_code=401, headers={"HX-Redirect": target})
    else:
        response = Redirect(
            f"{LOGIN}?next={quote(safe_next(back))}", status_code=HTTP_303_SEE_OTHER
        )
    if request.cookies.get(COOKIE) is not None:
        response.delete_cookie(COOKIE, path="/")
    return response


def _path_of(url: str) -> str:
    """The path and query of an absolute URL (htmx's current URL)."""
    rest = url.split("://", 1)[-1]
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"


class LoginForm(msgspec.Struct, kw_only=True):
    token: str = ""
    next: str = "/"


def _login_page(message: str, status: int, next_: str, retry_after: int = 0) -> Template:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return Template("login.html", context={"message": message, "next": next_, "nav": "login"},
                    status_code=status, headers=headers)  # fmt: skip


def auth_handlers(gate: Gate) -> list[Any]:
    """``GET``/``POST /login`` and ``POST /logout``, for an unguarded router."""

    @get(LOGIN, name="login")
    async def login_page(next: FromQuery[str] = "/") -> Template | Redirect:
        if not gate.enabled:
            return Redirect(safe_next(next), status_code=HTTP_303_SEE_OTHER)
        return _login_page("", 200, safe_next(next))

    @post(LOGIN, status_code=HTTP_303_SEE_OTHER)
    async def login(
        request: Request[Any, Any, Any],
        data: Annotated[LoginForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ) -> Template | Redirect:
        target = safe_next(data.next)
        if not gate.enabled:
            return Redirect(target, status_code=HTTP_303_SEE_OTHER)
        address = _address(request)
        wait = gate.retry_after(address)
        if wait > 0:
            return _login_page(f"Too many refused logins from this address: try again in "
                               f"{wait} s.", 429, target, wait)  # fmt: skip
        if not gate.matches(data.token.strip()):
            gate.failed(address)
            return _login_page("That is not the API token. Check OCPP_API_TOKEN and try again.",
                               401, target)  # fmt: skip
        response = Redirect(target, status_code=HTTP_303_SEE_OTHER)
        # No Max-Age: the cookie ends with the browser session.
        response.set_cookie(COOKIE, gate.token, path="/", secure=True, httponly=True,
                            samesite="strict")  # fmt: skip
        return response

    @post("/logout", status_code=HTTP_303_SEE_OTHER)
    async def logout() -> Redirect:
        response = Redirect(LOGIN if gate.enabled else "/", status_code=HTTP_303_SEE_OTHER)
        response.delete_cookie(COOKIE, path="/")
        return response

    return [login_page, login, logout]
