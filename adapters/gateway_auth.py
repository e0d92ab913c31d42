"""Who may connect to the gateway: the charge point identity in the path,
HTTP Basic credentials (OCPP 1.6 security profile 1) and the TLS context
(profile 2), and whether a listening address is reachable beyond this host.

Identities follow OCPP's ``identifierString`` (the OCPP 1.6 security
whitepaper's and OCPP 2.0.1's guidance): 1 to 48 characters from
``a-z A-Z 0-9 * - _ = + | @ .``. The ``:`` that ``identifierString`` also
allows is refused, since the identity is the Basic auth username and
RFC 7617 forbids a colon there. The path may percent-encode them.

Credentials come from a file of ``id:password`` lines (blank lines and lines
starting with ``#`` skipped; the password is everything after the first
colon, as the charger sends it). The file is read again when it changes, so
chargers can be added without a restart. Passwords never reach a log line.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import re
import ssl
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

MAX_IDENTITY: Final = 48
_IDENTITY: Final = re.compile(rf"[A-Za-z0-9*\-_=+|@.]{{1,{MAX_IDENTITY}}}")
# Compared against when the identity is unknown, so a miss takes as long as a hit.
_DUMMY: Final = b"\x00" * 32


class PathRefused(Exception):
    """Raised by :func:`identity` for a path that names no valid charge point;
    ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def identity(path: str) -> str:
    """The charge point identity of a request path ``/{id}`` (query ignored).

    Raises :class:`PathRefused`: 404 for a path that is not one segment,
    400 for an identity outside the allowed characters or length.
    """
    segment = urlsplit(path).path
    if not segment.startswith("/") or "/" in segment[1:] or segment == "/":
        raise PathRefused(404, "the path must be /{chargePointId}")
    cp = unquote(segment[1:], errors="replace")
    if not _IDENTITY.fullmatch(cp):
        raise PathRefused(
            400, f"a charge point id is 1 to {MAX_IDENTITY} of a-z A-Z 0-9 * - _ = + | @ ."
        )
    return cp


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[int, int, int]
    passwords: dict[str, bytes]


class Credentials:
    """The ``id:password`` file; :meth:`check` an ``Authorization`` header."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._loaded = self._load()

    def _stamp(self) -> tuple[int, int, int]:
        st = os.stat(self._path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> _Loaded:
        stamp = self._stamp()
        passwords: dict[str, bytes] = {}
        with open(self._path, "rb") as f:
            for number, line in enumerate(f, 1):
                line = line.rstrip(b"\r\n")
                if not line.strip() or line.lstrip().startswith(b"#"):
                    continue
                cp, colon, password = line.partition(b":")
                name = cp.decode("ascii", errors="replace")
                if not colon or not password or not _IDENTITY.fullmatch(name):
                    # The line's content may be a secret: name the line only.
                    raise ValueError(f"{self._path}, line {number}: expected id:password")
                passwords[name] = password
        log.info("basic auth: %d charge points in %s", len(passwords), self._path)
        return _Loaded(stamp, passwords)

    def _current(self) -> dict[str, bytes]:
        try:
            if self._stamp() != self._loaded.stamp:
                self._loaded = self._load()
        except (OSError, ValueError) as exc:
            log.error("basic auth: keeping the credentials loaded before: %s", exc)
        return self._loaded.passwords

    def check(self, charge_point_id: str, header: str | None) -> str | None:
        """None if ``header`` holds this charger's credentials, else why not."""
        if header is None:
            return "no credentials"
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return "not Basic credentials"
        try:
            decoded = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            return "malformed credentials"
        username, colon, password = decoded.partition(b":")
        expected = self._current().get(charge_point_id)
        # Always compare, so timing says nothing about which part was wrong.
        same = hmac.compare_digest(password, expected if expected is not None else _DUMMY)
        if not colon or username != charge_point_id.encode():
            return "username is not the charge point id"
        if expected is None:
            return "unknown charge point"
        return None if same else "wrong password"


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for ``cert`` and ``key`` (PEM), TLS 1.2 at least, as
    the OCPP 1.6 security whitepaper requires."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context
