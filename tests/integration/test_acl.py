"""Least privilege: the services under the Redis ACL users of the shipped
``deploy/redis-users.acl``, each with only the commands and keys it needs,
on a private redis-server loaded with exactly that file (test passwords in
place of its placeholders); and over TLS (``rediss://``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis as redis_sync
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.retry import Retry

from adapters.devstack import RedisServer, Service, TlsFiles, free_port, listening, wait_for
from processor import keys
from tests.adapters.history import migrated
from tests.simulator import finish, sim

TIMEOUT = 30.0
ACL_FILE = Path(__file__).parents[2] / "deploy" / "redis-users.acl"
PLACEHOLDER = re.compile(r"#REPLACE-WITH-SHA256-OF-THE-([A-Z-]+)-PASSWORD")
USERS = ("ocpp-admin", "ocpp-gateway", "ocpp-adapter", "ocpp-processor", "ocpp-api",
         "ocpp-archiver")  # fmt: skip
TOKEN = "acl-test-api-token"
CP = "ACL-0001"


def users_file(directory: Path) -> tuple[Path, dict[str, str]]:
    """The shipped ACL file with a fresh password hashed in for every user;
    the passwords by user name."""
    passwords: dict[str, str] = {}

    def hashed(match: re.Match[str]) -> str:
        user = match.group(1).lower()
        passwords[user] = secrets.token_urlsafe(16)
        return "#" + hashlib.sha256(passwords[user].encode()).hexdigest()

    path = directory / "users.acl"
    path.write_text(PLACEHOLDER.sub(hashed, ACL_FILE.read_text()))
    return path, passwords


@dataclass
class Acl:
    """A redis-server running the shipped users, and URLs to log in as them."""

    server: RedisServer
    passwords: dict[str, str] = field(repr=False)
    clients: dict[str, redis_sync.Redis] = field(default_factory=dict)

    def url(self, user: str) -> str:
        scheme, rest = self.server.url.split("://", 1)
        return f"{scheme}://{user}:{quote(self.passwords[user], safe='')}@{rest}"

    def client(self, user: str) -> redis_sync.Redis:
        if user not in self.clients:
            self.clients[user] = redis_sync.Redis.from_url(self.url(user))
        return self.clients[user]

    def denied(self) -> list[dict[str, Any]]:
        """ACL LOG: every command or key refused so far, however the client
        took it. CLIENT SETINFO (Redis 7.2+, sent by redis-py on connecting,
        refusal ignored) aside."""
        entries: list[dict[str, Any]] = self.client("ocpp-admin").acl_log()
        return [e for e in entries if e.get("object") != "client|setinfo"]


def _acl(directory: Path, tls: TlsFiles | None = None) -> Iterator[Acl]:
    path, passwords = users_file(directory)
    assert sorted(passwords) == sorted(USERS)
    with RedisServer(args=["--aclfile", str(path)], tls=tls) as server:
        acl = Acl(server, passwords)
        try:
            yield acl
        finally:
            for client in acl.clients.values():
                client.close()


@pytest.fixture
def acl(tmp_path: Path) -> Iterator[Acl]:
    yield from _acl(tmp_path)


@dataclass
class Stack:
    """The services, each logged in as its own user, logging to a file."""

    acl: Acl
    logs: Path
    gateway_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    services: list[Service] = field(default_factory=list)

    def start(self, module: str, user: str, args: Sequence[str] = (), **env: str) -> Service:
        log = (self.logs / f"{module}.log").open("ab")
        service = Service(module, self.acl.url(user), args=args, env=env, log=log)
        log.close()  # the child has its own copy
        self.services.append(service)
        return service

    def log(self, module: str) -> str:
        return (self.logs / f"{module}.log").read_text(errors="replace")

    def stop(self) -> list[tuple[str, int]]:
        return [(s.module, s.terminate()) for s in reversed(self.services)]


def start_stack(acl: Acl, logs: Path, *, api: bool = True, database_url: str = "") -> Stack:
    stack = Stack(acl, logs)
    gateway = stack.start("adapters.gateway", "ocpp-gateway", OCPP_GATEWAY_HOST="127.0.0.1",
                          OCPP_GATEWAY_PORT=str(stack.gateway_port))  # fmt: skip
    stack.start("adapters", "ocpp-adapter")
    stack.start("processor", "ocpp-processor", OCPP_READ_BLOCK_MS="200")
    if database_url:
        stack.start("adapters.archiver", "ocpp-archiver", DATABASE_URL=database_url,
                    OCPP_MIGRATE="true", args=["run"])  # fmt: skip
    if api:
        stack.start("adapters.api", "ocpp-api", OCPP_API_HOST="127.0.0.1",
                    OCPP_API_PORT=str(stack.api_port), OCPP_API_TOKEN=TOKEN,
                    DATABASE_URL=database_url)  # fmt: skip
    try:
        wait_for(lambda: not gateway.alive() or listening(stack.gateway_port), TIMEOUT,
                 "the gateway to listen")  # fmt: skip
        assert gateway.alive(), stack.log("adapters.gateway")
        if api:
            wait_for(lambda: listening(stack.api_port), TIMEOUT, "the API to listen")
    except BaseException:
        for service in stack.services:
            service.kill()
        raise
    return stack


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "adapters.cli", "--redis-url", url, *args],
                          capture_output=True, text=True, timeout=TIMEOUT)  # fmt: skip


def sessions(http: httpx.Client, admin: redis_sync.Redis) -> list[dict[str, Any]]:
    """Every transaction, one GET each: from PostgreSQL once the archiver
    has written it, from Redis until then, as the API's user may."""
    seq = int(admin.get(keys.TXN_SEQ) or 0)
    return [http.get(f"/v1/transactions/{n}").json() for n in range(1, seq + 1)]


@pytest.mark.slow
def test_the_pipeline_runs_under_its_own_users(acl: Acl, tmp_path: Path, postgres_db: str) -> None:
    admin = acl.client("ocpp-admin")
    asyncio.run(migrated(postgres_db))
    stack = start_stack(acl, tmp_path, database_url=postgres_db)
    charger = sim(f"ws://127.0.0.1:{stack.gateway_port}", "--chargers", "1", "--sessions", "1",
                  "--linger", "60", "--prefix", "ACL")  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{stack.api_port}", timeout=TIMEOUT,
                          headers={"authorization": f"Bearer {TOKEN}"}) as http:  # fmt: skip
            # Its own session: boot, authorize, start, meter values, stop.
            wait_for(lambda: charger.poll() is not None
                     or any(t["stop_timestamp"] for t in sessions(http, admin)), TIMEOUT,
                     "the charger's own session")  # fmt: skip
            assert charger.poll() is None, "the simulator exited early"
            # The authorization list (a MULTI/EXEC), then a command the
            # charger carries out.
            assert http.put("/v1/id-tags/ACL-TAG", json={"status": "Accepted"}).status_code == 201
            answers: list[dict[str, Any]] = []

            def remote_start_accepted() -> bool:
                # The charger turns a RemoteStart down (Rejected) until its own
                # session has finished, which ends a moment after the
                # transaction's record is closed: ask again until it is free.
                resp = http.post(
                    f"/v1/charge-points/{CP}/commands/RemoteStartTransaction",
                    params={"wait": "20"},
                    json={"idTag": "ACL-TAG", "connectorId": 1},
                )
                assert resp.status_code == 200, resp.text
                answers.append(resp.json())
                return bool(answers[-1]["state"] == "answered"
                            and answers[-1]["status"] == "Accepted")  # fmt: skip

            wait_for(remote_start_accepted, TIMEOUT, "the charger to accept a RemoteStart", 0.1)
            assert all(a["state"] == "answered" for a in answers), answers

            def remote_session_closed() -> bool:
                return any(t["id_tag"] == "ACL-TAG" and t["stop_timestamp"]
                           for t in sessions(http, admin))  # fmt: skip

            wait_for(remote_session_closed, TIMEOUT, "the remote-started session to close")
            assert http.get("/v1/id-tags/ACL-TAG").json()["status"] == "Accepted"
            assert http.get("/healthz").json() == {"status": "ok"}

            # The archiver wrote both sessions, as its own user.
            def archived() -> bool:
                found = sessions(http, admin)
                return len(found) == 2 and all(t["archived"] and t["stop_timestamp"]
                                               for t in found)  # fmt: skip

            wait_for(archived, TIMEOUT, "both sessions archived")
            # The operator console, whose pages read more than /v1 does.
            http.cookies.set("ocpp_console", TOKEN)
            for path in (
                "/",
                "/overview/live",
                "/chargers",
                f"/chargers/{CP}",
                f"/chargers/{CP}/frames",
                "/transactions",
                "/id-tags",
                "/transactions?protocol=ocpp2.0.1",
                "/dead-letters",
                "/anomalies",
            ):
                page = http.get(path)
                assert page.status_code == 200, (path, page.text[:500])
            assert "processors" in http.get("/").text  # the group's lag
        # An OCPP 2.0.1 station's session too: its writes (HSETNX among them)
        # under the same users.
        station = sim(f"ws://127.0.0.1:{stack.gateway_port}", "--chargers", "1", "--sessions",
                      "1", "--protocol", "ocpp2.0.1", "--prefix", "ACL201")  # fmt: skip
        done201 = finish(station, stop=False)
        assert done201["errors"] == 0 and done201["sessions_completed"] == 1, done201
        [session] = admin.keys("ocpp:cp:ACL201-0001:txn:*")
        assert {b"started_at", b"ended_at", b"evse_id"} <= set(admin.hgetall(session))
        # The CLI has the API's rights; the container health check the processor's.
        done = cli(acl.url("ocpp-api"), "charge-point", CP)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["registration_status"] == "Accepted"
        done = cli(acl.url("ocpp-api"), "instances")
        assert done.returncode == 0, done.stderr
        listed = json.loads(done.stdout)["instances"]
        assert sorted(i["service"] for i in listed) == [
            "adapter", "archiver", "gateway", "processor"]  # fmt: skip

        done = cli(acl.url("ocpp-processor"), "health", "--group")
        assert done.returncode == 0, done.stderr
        summary = finish(charger)
        assert summary["errors"] == 0, summary
        assert summary["sessions_completed"] == 2 and summary["remote_sessions"] == 1
    finally:
        if charger.poll() is None:
            charger.kill()
        charger.communicate()  # reaped, and its stdout pipe closed, whatever happened
        codes = stack.stop()
    assert all(code == 0 for _, code in codes), codes
    # Replies were pushed to the gateway as written, not found by polling.
    assert "by client tracking" in stack.log("adapters.gateway")
    # Nothing any service did was refused, even where it would have coped.
    assert acl.denied() == []
    for module in ("adapters.gateway", "adapters", "processor", "adapters.archiver",
                   "adapters.api"):  # fmt: skip
        assert "NOPERM" not in stack.log(module), stack.log(module)
    assert admin.llen(keys.REQUESTS) == 0
    assert admin.exists(keys.INSTANCES) == 0  # each took itself out as it stopped


# (user, command): each must be refused with NOPERM.
REFUSED = [
    # The adapter moves the list into the stream, and that is all.
    ("ocpp-adapter", ("HSET", "ocpp:cp:X", "f", "v")),
    ("ocpp-adapter", ("RPOP", "ocpp:responses:X")),
    ("ocpp-adapter", ("XACK", keys.INBOUND, keys.GROUP, "0-1")),
    ("ocpp-adapter", ("EVAL", "return 1", "0")),
    # The API neither feeds nor consumes the stream, nor writes state.
    ("ocpp-api", ("XADD", keys.INBOUND, "*", "e", "x")),
    ("ocpp-api", ("XACK", keys.INBOUND, keys.GROUP, "0-1")),
    ("ocpp-api", ("HSET", "ocpp:cp:X", "f", "v")),
    ("ocpp-api", ("LPUSH", keys.REQUESTS, "x")),
    ("ocpp-api", ("RPOP", "ocpp:responses:X")),  # it may queue for a charger, not read
    # The gateway only pushes requests and pops replies.
    ("ocpp-gateway", ("HGETALL", "ocpp:cp:X")),
    ("ocpp-gateway", ("RPOP", keys.REQUESTS)),  # write-only: it cannot take them back
    ("ocpp-gateway", ("XADD", keys.INBOUND, "*", "e", "x")),
    ("ocpp-gateway", ("SUBSCRIBE", "ocpp:other")),
    # The processor writes replies but cannot read them, nor the requests.
    ("ocpp-processor", ("RPOP", "ocpp:responses:X")),
    ("ocpp-processor", ("LPUSH", keys.REQUESTS, "x")),
    ("ocpp-processor", ("SADD", keys.KNOWN_CHARGE_POINTS, "X")),
    # The archiver reads history and nothing else; the API cannot read it.
    ("ocpp-archiver", ("XREADGROUP", "GROUP", keys.GROUP, "x", "STREAMS", keys.INBOUND, ">")),
    ("ocpp-archiver", ("HGETALL", "ocpp:cp:X")),
    ("ocpp-archiver", ("LPUSH", "ocpp:responses:X", "x")),
    ("ocpp-api", ("XRANGE", keys.HISTORY, "-", "+")),
    # The registry of instances: each service its own hash commands there
    # only, which write nothing anywhere else; the API and CLI read it.
    ("ocpp-adapter", ("HSET", keys.INBOUND, "f", "v")),
    ("ocpp-adapter", ("DEL", keys.INSTANCES)),
    ("ocpp-gateway", ("HSET", "ocpp:responses:X", "f", "v")),
    ("ocpp-processor", ("DEL", keys.INSTANCES)),
    ("ocpp-api", ("HSET", keys.INSTANCES, "f", "v")),
    # Nobody but the admin administers.
    *[(user, cmd) for user in USERS[1:] for cmd in
      [("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("ACL", "LIST")]],
]  # fmt: skip


def test_each_user_is_refused_outside_its_rights(acl: Acl) -> None:
    for user, command in REFUSED:
        with pytest.raises(NoPermissionError):
            acl.client(user).execute_command(*command)
            pytest.fail(f"{user} may {' '.join(command)}")
    # A script runs with its caller's rights: loading one is no way around them.
    adapter = acl.client("ocpp-adapter")
    sha = adapter.script_load("return redis.call('XADD', 'ocpp:dead', '*', 'e', 'x')")
    with pytest.raises(ResponseError, match="can't access"):
        adapter.evalsha(sha, 0)
    # Keys a script declares need read and write (EVALSHA cannot tell which).
    with pytest.raises(NoPermissionError):
        adapter.evalsha(sha, 1, keys.DEAD)
    assert acl.client("ocpp-admin").exists(keys.DEAD) == 0
    # No one gets in without a user.
    anonymous = redis_sync.Redis(port=acl.server.port, retry=Retry(NoBackoff(), 0))
    with pytest.raises(AuthenticationError):
        anonymous.ping()
    anonymous.close()
    for user in USERS:
        assert acl.client(user).ping()


def test_the_readme_shows_the_shipped_lines() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert f"```\n{ACL_FILE.read_text()}```" in readme


# --- TLS -------------------------------------------------------------------------


@pytest.fixture
def tls_acl(tmp_path: Path) -> Iterator[Acl]:
    """The ACL users on a redis-server serving TLS only, its certificate
    self-signed for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl CLI")
    cert, key = tmp_path / "redis.crt", tmp_path / "redis.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    yield from _acl(tmp_path, TlsFiles(cert, key, cert))


@pytest.mark.slow
def test_the_pipeline_runs_over_tls(tls_acl: Acl, tmp_path: Path) -> None:
    assert tls_acl.server.url.startswith("rediss://")
    # TLS only, and the server is verified: no plain connection, no
    # connection trusting another CA.
    once = Retry(NoBackoff(), 0)
    with pytest.raises(redis_sync.ConnectionError):
        redis_sync.Redis(port=tls_acl.server.port, socket_timeout=2, retry=once).ping()
    with pytest.raises(redis_sync.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        redis_sync.Redis.from_url(f"rediss://127.0.0.1:{tls_acl.server.port}/0", retry=once).ping()
    stack = start_stack(tls_acl, tmp_path, api=False)
    charger = sim(
        f"ws://127.0.0.1:{stack.gateway_port}",
        "--chargers",
        "1",
        "--sessions",
        "1",
        "--prefix",
        "TLS",
    )
    try:
        summary = finish(charger, stop=False)
    finally:
        codes = stack.stop()
    assert summary["errors"] == 0 and summary["sessions_completed"] == 1, summary
    assert all(code == 0 for _, code in codes), codes
    assert "by client tracking" in stack.log("adapters.gateway")
    assert tls_acl.client("ocpp-admin").sismember(keys.CHARGE_POINTS, "TLS-0001")
