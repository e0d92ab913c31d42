"""Who may use the HTTP API: the bearer-token guard.

The guard compares the token in constant time and slows guessing down: after
:data:`LOGIN_FAILURES` refused logins from one address within
:data:`LOGIN_WINDOW_S` seconds, that address gets 429 for as long
(:class:`adapters.rate_limit.FailureLimiter`).
"""

from __future__ import annotations

import hmac
import logging
import math
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler

from adapters.rate_limit import Failure, FailureLimiter, client_key

log = logging.getLogger("api")

LOGIN_FAILURES = 10
LOGIN_WINDOW_S = 60.0
# Refused logins logged per window across all addresses, so that many
# addresses cannot flood the log either.
LOGGED_PER_WINDOW = 100

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
