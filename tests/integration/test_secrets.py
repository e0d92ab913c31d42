"""Secrets never reach a log: the API token, the gateway's Basic-auth
passwords and the Redis password in ``REDIS_URL``, whatever the services go
through (start, refused logins, a wrong Redis password, no Redis at all),
at DEBUG, on stderr and in ``--help``.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
import redis as redis_sync
import websockets
from websockets.exceptions import InvalidStatus

from adapters.devstack import RedisServer, Service, free_port, wait_for

pytestmark = pytest.mark.slow

TIMEOUT = 20.0
# Unusual strings, so that finding one anywhere means it leaked.
REDIS_PASSWORD = "redis-Secret-7f3a9c"
WRONG_REDIS_PASSWORD = "wrong-Secret-0b9d41"
API_TOKEN = "api-Secret-91c2e8"
CHARGER_PASSWORD = "charger-Secret-55e0aa"
# Left unencoded, the "/" ends the URL's authority early.
SLASHED_PASSWORD = "slash-Secret-d41c/8e"
CP = "CP-S"
SECRETS = (
    REDIS_PASSWORD,
    WRONG_REDIS_PASSWORD,
    SLASHED_PASSWORD.partition("/")[0],
    API_TOKEN,
    CHARGER_PASSWORD,
    base64.b64encode(f"{CP}:{CHARGER_PASSWORD}".encode()).decode(),
)
SERVICES = ("adapters.gateway", "adapters", "processor", "adapters.api")


@dataclass
class Logs:
    """Services started with DEBUG logs, each logging to its own file."""

    directory: Path
    services: list[Service] = field(default_factory=list)
    count: int = 0

    def start(self, module: str, redis_url: str, **env: str) -> tuple[Service, Path]:
        self.count += 1
        path = self.directory / f"{self.count}-{module}.log"
        with path.open("wb") as log:
            service = Service(module, redis_url, env={"OCPP_LOG_LEVEL": "DEBUG", **env}, log=log)
        self.services.append(service)
        return service, path

    def text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.directory.glob("*")))


def says(path: Path, text: str) -> None:
    wait_for(lambda: text in path.read_text(errors="replace"), TIMEOUT, f"{text!r} in {path.name}")


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[Logs]:
    found = Logs(tmp_path / "logs")
    found.directory.mkdir()
    yield found
    for service in found.services:
        service.terminate()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def _gateway_logins(port: int) -> None:
    url = f"ws://127.0.0.1:{port}"
    async with websockets.connect(f"{url}/{CP}", subprotocols=["ocpp1.6"],
                                  additional_headers=_basic(CP, CHARGER_PASSWORD)):  # fmt: skip
        pass
    refused = [
        (f"/{CP}", _basic(CP, WRONG_REDIS_PASSWORD)),
        (f"/{CP}", _basic("CP-OTHER", CHARGER_PASSWORD)),
        (f"/{CP}", {"Authorization": f"Bearer {CHARGER_PASSWORD}"}),
        (f"/{CP}/x?password={CHARGER_PASSWORD}", {}),
    ]
    for path, headers in refused:
        with pytest.raises(InvalidStatus):
            async with websockets.connect(url + path, subprotocols=["ocpp1.6"],
                                          additional_headers=headers):  # fmt: skip
                pass


def test_no_secret_reaches_a_log(private_redis: RedisServer, logs: Logs, tmp_path: Path) -> None:
    admin = redis_sync.Redis.from_url(private_redis.url)
    admin.acl_setuser("ocpp", enabled=True, passwords=[f"+{REDIS_PASSWORD}"], keys=["*"],
                      channels=["*"], commands=["+@all"])  # fmt: skip
    admin.close()
    rest = f"127.0.0.1:{private_redis.port}/0"
    good = f"redis://ocpp:{REDIS_PASSWORD}@{rest}"
    wrong = f"redis://ocpp:{WRONG_REDIS_PASSWORD}@{rest}"
    nowhere = f"redis://ocpp:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0"
    malformed = f"redis://ocpp:{SLASHED_PASSWORD}@{rest}"
    credentials = tmp_path / "chargers"
    credentials.write_text(f"{CP}:{CHARGER_PASSWORD}\n")

    # The gateway: a charger logs in; others try with wrong or misplaced secrets.
    port = free_port()
    _, gateway_log = logs.start("adapters.gateway", good, OCPP_GATEWAY_HOST="127.0.0.1",
                                OCPP_GATEWAY_PORT=str(port),
                                OCPP_GATEWAY_BASIC_AUTH=str(credentials))  # fmt: skip
    says(gateway_log, "listening on")
    anyio.run(_gateway_logins, port)
    says(gateway_log, "refused path")

    # The API: right and wrong tokens, and a token in the query; then the same
    # where Redis refuses the password, and where there is no Redis.
    api_env = {"OCPP_API_HOST": "127.0.0.1", "OCPP_API_TOKEN": API_TOKEN}
    for url, status in ((good, 200), (wrong, 503), (nowhere, 503)):
        api_port = free_port()
        _, api_log = logs.start("adapters.api", url, OCPP_API_PORT=str(api_port), **api_env)
        base = f"http://127.0.0.1:{api_port}"
        says(api_log, "Uvicorn running")
        assert httpx.get(f"{base}/healthz").status_code == status
        for token in (API_TOKEN, WRONG_REDIS_PASSWORD):
            httpx.get(f"{base}/v1/charge-points", headers={"Authorization": f"Bearer {token}"})
        httpx.get(f"{base}/v1/charge-points?token={API_TOKEN}")
    says(api_log, "health check: redis does not answer")

    # A wrong Redis password, and no Redis at all, for every long-running service.
    started = [
        logs.start(module, url, OCPP_API_HOST="127.0.0.1", OCPP_API_PORT=str(free_port()),
                   OCPP_GATEWAY_HOST="127.0.0.1", OCPP_GATEWAY_PORT=str(free_port()))
        for url in (wrong, nowhere) for module in SERVICES
        if module != "adapters.api"  # it only meets Redis on a request, as above
    ]  # fmt: skip
    for _, path in started:
        says(path, "redis unavailable")

    # The CLI's errors, every --help with the secrets in its environment, and
    # a URL that does not parse: each exits at once.
    env = {"OCPP_API_TOKEN": API_TOKEN, "OCPP_GATEWAY_BASIC_AUTH": str(credentials)}
    runs = [
        *[[sys.executable, "-m", "adapters.cli", "--redis-url", url, "charge-points"]
          for url in (wrong, nowhere, malformed)],
        *[[sys.executable, "-m", module, "--help"] for module in (*SERVICES, "adapters.cli")],
        [sys.executable, "-m", "processor", "--redis-url", malformed],
    ]  # fmt: skip
    processes = [
        subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "REDIS_URL": good, **env},
        )
        for args in runs
    ]
    for n, process in enumerate(processes):
        out, _ = process.communicate(timeout=TIMEOUT)
        (logs.directory / f"run-{n}.log").write_bytes(out)
    codes = [s.terminate() for s in logs.services]
    text = logs.text()
    # The paths were taken ...
    for evidence in ("refused CP-S", "wrong password", "refused path", "AuthenticationError",
                     "ConnectionError", "REDIS_URL is not a valid"):  # fmt: skip
        assert evidence in text
    # ... and left no secret behind.
    for secret in SECRETS:
        assert secret not in text
    assert codes == [0] * len(codes)
