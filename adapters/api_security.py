"""Who may use the HTTP API: where it listens, and the bearer-token guard.

Secure by default: without ``OCPP_API_TOKEN`` the API listens on loopback
only, and refuses to start on any other address unless
``OCPP_API_INSECURE`` says so (:func:`listen_host`). With a token, the guard
compares it in constant time and slows guessing down: after
:data:`LOGIN_FAILURES` refused logins from one address within
:data:`LOGIN_WINDOW_S` seconds, that address gets 429 for as long
(:class:`adapters.rate_limit.FailureLimiter`).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import socket
from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler

from adapters.rate_limit import Failure, FailureLimiter, client_key
from processor.listening import loopback

log = logging.getLogger("api")

MIN_TOKEN_LENGTH = 16
LOGIN_FAILURES = 10
LOGIN_WINDOW_S = 60.0
# Refused logins logged per window across all addresses, so that many
# addresses cannot flood the log either.
LOGGED_PER_WINDOW = 100

ANY = "0.0.0.0"
LOOPBACK = "127.0.0.1"


class UnsafeSetting(ValueError):
    """Raised at start for settings that would expose the API, or make its
    token guessable; the message names the settings to change."""


# --- where to listen ---------------------------------------------------------

Resolve = Callable[[str], list[str]]


def _resolve(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_loopback(host: str, resolve: Resolve = _resolve) -> bool:
    """Whether ``host`` is loopback only: 127.0.0.0/8, ::1, ``localhost``, or
    a name every address of which is one of those. Raises OSError for a name
    that does not resolve."""
    if host.lower() == "localhost":
        return True
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:  # a name: every address it has must be loopback
        addresses = resolve(host)
        return bool(addresses) and all(loopback(a) for a in addresses)
    return loopback(host)


def check_token(token: str) -> None:
    """Raise UnsafeSetting for a token short enough to guess."""
    if token and len(token) < MIN_TOKEN_LENGTH:
        raise UnsafeSetting(
            f"OCPP_API_TOKEN is {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
            "(e.g. openssl rand -hex 32): a short token can be guessed"
        )


def listen_host(host: str, token: str, insecure: bool, resolve: Resolve = _resolve) -> str:
    """The address to listen on: ``host``, or when it is empty 0.0.0.0 with a
    token and 127.0.0.1 without. Raises UnsafeSetting for a token too short,
    and for a ``host`` that is not loopback when there is no token, unless
    ``insecure``."""
    check_token(token)
    if not host:
        return ANY if token else LOOPBACK
    if token or insecure:
        return host
    try:
        loopback = is_loopback(host, resolve)
    except OSError as exc:
        raise UnsafeSetting(f"OCPP_API_HOST={host} does not resolve ({exc})") from None
    if not loopback:
        raise UnsafeSetting(
            f"OCPP_API_HOST={host} is not a loopback address and OCPP_API_TOKEN is empty: "
            "anyone who could reach the port could send commands to chargers; set "
            "OCPP_API_TOKEN, or OCPP_API_INSECURE=1 to listen there without one"
        )
    return host


def exposed(host: str, token: str, resolve: Resolve = _resolve) -> bool:
    """Whether the API on ``host`` answers /v1 without a token beyond this
    machine (what OCPP_API_INSECURE allows, loudly)."""
    if token:
        return False
    try:
        return not is_loopback(host, resolve)
    except OSError:
        return True


# --- the bearer guard --------------------------------------------------------


def bearer_guard(
    token: str,
    limiter: FailureLimiter | None = None,
    logged_per_window: int = LOGGED_PER_WINDOW,
) -> Any:
    """A guard refusing requests without ``Authorization: Bearer <token>``
    (compared in constant time) with 401, and every request from an address
    that ``limiter`` (by default :data:`LOGIN_FAILURES` in
    :data:`LOGIN_WINDOW_S` seconds) blocks with 429 and ``Retry-After``. It
    logs refused logins with the address and the route, never what was
    sent: the first of each address's window, and when one is blocked; at
    most ``logged_per_window`` such lines per window in all."""
    expected = token.encode()
    if limiter is None:  # not `or`: an empty limiter is falsy (it has a len)
        limiter = FailureLimiter(LOGIN_FAILURES, LOGIN_WINDOW_S)
    # Counts log lines, not logins: one key, blocked one past the budget.
    logged = FailureLimiter(logged_per_window + 1, limiter.window_s, 1, limiter.clock)

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        address = connection.client.host if connection.client else None
        key = client_key(address)
        wait = limiter.retry_after(key)
        if wait > 0:
            seconds = math.ceil(wait)
            raise TooManyRequestsException(
                detail=f"too many refused logins from this address; try again in {seconds} s",
                headers={"Retry-After": str(seconds)},
            )
        scheme, _sep, given = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected):
            return
        failure = limiter.failed(key)
        if failure.count == 1 or failure.blocked:
            _log_refusal(logged, key, connection, failure, limiter.window_s)
        raise NotAuthorizedException(
            detail="a valid bearer token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )

    return guard


def _log_refusal(
    logged: FailureLimiter,
    key: str,
    connection: ASGIConnection[Any, Any, Any, Any],
    failure: Failure,
    window_s: float,
) -> None:
    budget = logged.failed("all")
    if budget.blocked:
        log.warning("%d refused logins logged within %g s; not logging more for %g s",
                    budget.count - 1, window_s, window_s)  # fmt: skip
    if budget.count >= logged.limit:
        return
    route = f"{connection.scope.get('method', '')} {connection.url.path}"
    if failure.blocked:
        log.warning("refused %d logins from %s within %g s (last: %s); it gets 429 for %g s",
                    failure.count, key, window_s, route, window_s)  # fmt: skip
    else:
        log.warning("refused login from %s to %s (missing or wrong bearer token); the next "
                    "in %g s are not logged one by one", key, route, window_s)  # fmt: skip
