"""OTLP/HTTP for the exporter process's fast path: requests encoded by
:mod:`processor.otlp`, posted as the standard ``OTEL_EXPORTER_OTLP_*``
variables say, with the Python SDK's readings of them (the timeout in
seconds, ``OTEL_EXPORTER_OTLP_ENDPOINT`` a base to which ``/v1/traces`` is
appended, a signal-specific endpoint taken as it is), and batched as
``OTEL_BSP_*`` says. Through the standard library's ``http.client`` to a
collector over plain HTTP with no proxy between (the common sidecar or
in-cluster one), else through requests, for TLS, proxies and logins as the
SDK's exporter would.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import random
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from opentelemetry.util.re import parse_env_headers

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
# Worth another try, as the OTLP specification lists them; tries and their
# backoff as the Python SDK's OTLP exporters make them.
RETRYABLE = frozenset({429, 502, 503, 504})
MAX_ATTEMPTS = 6
BACKOFF_CAP_S = 32.0


def _env(env: Mapping[str, str], name: str) -> str | None:
    """The traces-specific variable, else the general one."""
    return env.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}")


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    try:
        return float(raw) if raw else default
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, raw, default)
        return default


@dataclass(frozen=True)
class HttpConfig:
    endpoint: str = DEFAULT_ENDPOINT
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    compression: str = "none"  # or gzip, deflate
    verify: str | bool = True  # a CA bundle's path, or the system's
    client_cert: tuple[str, str] | str | None = None
    batch_size: int = 512
    delay_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> HttpConfig:
        endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if not endpoint and (base := env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
            endpoint = base.rstrip("/") + "/v1/traces"
        compression = (_env(env, "COMPRESSION") or "none").strip().lower()
        if compression not in ("none", "gzip", "deflate"):
            log.warning("unknown OTLP compression %r; sending uncompressed", compression)
            compression = "none"
        cert, key = _env(env, "CLIENT_CERTIFICATE"), _env(env, "CLIENT_KEY")
        return cls(
            endpoint=endpoint or DEFAULT_ENDPOINT,
            headers=parse_env_headers(_env(env, "HEADERS") or "", liberal=True),
            timeout_s=_number(env, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", 0)
            or _number(env, "OTEL_EXPORTER_OTLP_TIMEOUT", 10.0),
            compression=compression,
            verify=_env(env, "CERTIFICATE") or True,
            # A certificate alone is a PEM file holding the key too.
            client_cert=(cert, key) if cert and key else cert,
            batch_size=max(1, int(_number(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512))),
            delay_s=_number(env, "OTEL_BSP_SCHEDULE_DELAY", 5000) / 1000,
        )


class HttpSender:
    """Posts requests to the collector over one kept-alive connection.
    A request that fails with a retryable status or a connection error is
    tried again, with jittered exponential backoff, until its timeout has
    passed; then it is dropped and counted, as the SDK's exporters do."""

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        self.dropped = 0
        self._session = requests.Session()
        self._session.headers.update(config.headers)
        self._session.headers["Content-Type"] = "application/x-protobuf"
        if config.compression != "none":
            self._session.headers["Content-Encoding"] = config.compression
        # What requests would read from the environment on every post
        # (proxies, a CA bundle, ~/.netrc), read once: the lookups cost as
        # much as the post.
        found = self._session.merge_environment_settings(
            config.endpoint, {}, None, config.verify, config.client_cert
        )
        self._session.proxies.update(found["proxies"])
        self._session.verify = found["verify"]
        self._session.cert = found["cert"]
        self._session.auth = requests.utils.get_netrc_auth(config.endpoint)
        self._session.trust_env = False
        self._failing = False
        self._plain = _plain_connection(config.endpoint, self._session)
        parts = urlsplit(config.endpoint)
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._headers = dict(self._session.headers)

    def send(self, body: bytes, spans: int) -> bool:
        """Post one request: True once the collector took it; False, and the
        spans counted as dropped, when it refused it, or when the tries or
        the timeout ran out. Never raises."""
        if self.config.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        elif self.config.compression == "deflate":
            body = zlib.compress(body)
        deadline = time.monotonic() + self.config.timeout_s
        reason = ""
        for attempt in range(MAX_ATTEMPTS):
            error = self._post(body, max(deadline - time.monotonic(), 0.1))
            if error is None:
                if self._failing:
                    log.warning("span export to %s works again", self.config.endpoint)
                    self._failing = False
                return True
            retryable, reason, wait = error
            if wait is None:  # jittered exponential backoff, as the SDK's exporters do
                wait = min(BACKOFF_CAP_S, 2.0**attempt) * random.uniform(0.8, 1.2)
            if not retryable or time.monotonic() + wait >= deadline:
                break
            time.sleep(wait)
        self.dropped += spans
        if not self._failing:
            log.warning("span export to %s failed (%s): dropping spans until it works",
                        self.config.endpoint, reason)  # fmt: skip
            self._failing = True
        return False

    def _post(self, body: bytes, timeout: float) -> tuple[bool, str, float | None] | None:
        """None on success, else (whether to try again, why not, how long
        the collector asked us to wait)."""
        if self._plain is not None:
            return self._post_plain(self._plain, body, timeout)
        try:
            response = self._session.post(self.config.endpoint, data=body, timeout=timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            return True, type(exc).__name__, None
        except Exception as exc:  # a bad URL, header or certificate file: trying again won't help
            return False, f"{type(exc).__name__}: {exc}", None
        return _outcome(response.status_code, response.headers.get("Retry-After", ""))

    def _post_plain(
        self, conn: http.client.HTTPConnection, body: bytes, timeout: float
    ) -> tuple[bool, str, float | None] | None:
        deadline = time.monotonic() + timeout
        kept = conn.sock is not None
        while True:
            left = max(deadline - time.monotonic(), 0.1)
            conn.timeout = left  # for a new connection; a kept one is told below
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(left)
                conn.request("POST", self._path, body, self._headers)
                response = conn.getresponse()
                response.read()
            except _STALE as exc:
                conn.close()
                if kept:  # a kept-alive connection the collector had closed: a new one, once
                    kept = False
                    continue
                return True, type(exc).__name__, None
            except (OSError, http.client.HTTPException) as exc:  # refused, timed out...
                conn.close()
                return True, type(exc).__name__, None
            except Exception as exc:  # a header http.client refuses: trying again won't help
                conn.close()
                return False, f"{type(exc).__name__}: {exc}", None
            if 300 <= response.status < 400:
                # A redirect, which http.client does not follow: from now on
                # requests, which does, as the SDK's exporter would.
                conn.close()
                self._plain = None
                return self._post(body, max(deadline - time.monotonic(), 0.1))
            return _outcome(response.status, response.getheader("Retry-After") or "")

    def close(self) -> None:
        if self._plain is not None:
            self._plain.close()
        self._session.close()


# What a kept-alive connection the collector closed while idle fails with.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def _outcome(status: int, retry_after: str) -> tuple[bool, str, float | None] | None:
    if 200 <= status < 400:  # (requests follows redirects; the plain path hands them over)
        return None
    wait = float(retry_after) if retry_after.isdigit() else None
    return status in RETRYABLE, f"HTTP {status}", wait


def _plain_connection(
    endpoint: str, session: requests.Session
) -> http.client.HTTPConnection | None:
    """A connection of the standard library's for a collector reached over
    plain HTTP, no proxy and no ~/.netrc login between: a post through it
    costs the exporter a quarter of one through requests (0.16 ms against
    0.64 for 125 kB, bench-side), half the exporter's CPU. None otherwise:
    requests then does TLS, proxies and logins as the SDK's exporter would."""
    parts = urlsplit(endpoint)
    proxy = requests.utils.select_proxy(endpoint, session.proxies)
    if parts.scheme != "http" or proxy or session.auth or parts.username or parts.password:
        return None
    try:
        return http.client.HTTPConnection(parts.hostname or "localhost", parts.port or 80)
    except (ValueError, http.client.HTTPException):  # a bad port: requests will say so
        return None
