"""The Redis of ``docker compose up``, without Docker: the shipped
``deploy/redis-entrypoint.sh`` starts a real redis-server with the shipped
ACL file and passwords from the environment; ``docker-compose.yml`` logs
each service in as its own user of that file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import redis as redis_sync
import yaml  # PyYAML, which litestar requires
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError
from redis.retry import Retry

from adapters.devstack import RedisServer
from tests.integration.test_acl import ACL_FILE, PLACEHOLDER, USERS

TIMEOUT = 30.0
ROOT = Path(__file__).parents[2]
ENTRYPOINT = ROOT / "deploy" / "redis-entrypoint.sh"
COMPOSE = ROOT / "docker-compose.yml"
RENDERED = "ocpp-redis-users.acl"


def variable(user: str) -> str:
    """The variable holding ``user``'s password: ocpp-api, OCPP_API_REDIS_PASSWORD."""
    return user.upper().replace("-", "_") + "_REDIS_PASSWORD"


# Characters a shell, sed, awk, printf, a URL or the ACL syntax would make
# something of; a leading dash for option parsers.
PASSWORDS = {user: f"-{user}/&\\'\"$(id)`id`%s#>~é" for user in USERS}
ENVIRONMENT = {variable(user): password for user, password in PASSWORDS.items()}


# A rule, or a selector: rules in parentheses, one argument of ACL SETUSER.
RULE = re.compile(r"\([^)]*\)|\S+")


def shipped_rules() -> dict[str, list[str]]:
    """Each user's rules in the shipped file, its password placeholder left out."""
    rules = {}
    for line in ACL_FILE.read_text().splitlines():
        _, user, *rest = RULE.findall(line)
        rules[user] = [rule for rule in rest if not PLACEHOLDER.fullmatch(rule)]
    return rules


def login(server: RedisServer, user: str, password: str) -> redis_sync.Redis:
    return redis_sync.Redis(port=server.port, username=user, password=password,
                            retry=Retry(NoBackoff(), 0))  # fmt: skip


@pytest.fixture
def entrypoint_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """redis-server as the container starts it: through the entrypoint, the
    compose file's flags after it (here a private port and directory, and
    one that is not a default)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    for name, password in ENVIRONMENT.items():
        monkeypatch.setenv(name, password)
    command = ["sh", str(ENTRYPOINT)]
    with RedisServer(command=command, args=["--appendfsync", "always"]) as server:
        yield server


def test_each_user_logs_in_with_its_password_and_the_shipped_rules(
    entrypoint_redis: RedisServer,
) -> None:
    for user, password in PASSWORDS.items():
        with login(entrypoint_redis, user, password) as client:
            assert client.ping()
        with pytest.raises(AuthenticationError), login(entrypoint_redis, user, "wrong") as client:
            client.ping()
    with login(entrypoint_redis, "ocpp-admin", PASSWORDS["ocpp-admin"]) as admin:
        assert sorted(admin.acl_users()) == sorted(shipped_rules())
        assert "off" in admin.acl_getuser("default")["flags"]
        # Each user is what its line in the file makes of a fresh user.
        for user, rules in shipped_rules().items():
            admin.execute_command("ACL", "SETUSER", f"expected-{user}", *rules)
            got = admin.acl_getuser(user)
            expected = admin.acl_getuser(f"expected-{user}")
            password = PASSWORDS.get(user)
            hashes = [hashlib.sha256(password.encode()).hexdigest()] if password else []
            assert got.pop("passwords") == hashes
            expected.pop("passwords")
            assert got == expected, user


def test_the_rendered_file_is_private_and_holds_no_password(
    entrypoint_redis: RedisServer, tmp_path: Path
) -> None:
    rendered = tmp_path / RENDERED
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o600
    text = rendered.read_text()
    assert "REPLACE" not in text
    assert not any(password in text for password in PASSWORDS.values())
    assert [p.name for p in tmp_path.glob(f"{RENDERED}*")] == [RENDERED]
    with login(entrypoint_redis, "ocpp-admin", PASSWORDS["ocpp-admin"]) as admin:
        assert admin.config_get("aclfile") == {"aclfile": str(rendered)}
        # The flags after the entrypoint reach redis-server.
        assert admin.config_get("appendfsync") == {"appendfsync": "always"}


def fake_command(directory: Path, name: str, script: str) -> None:
    """An executable ``name`` in ``directory``, running the sh ``script``."""
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(0o755)


def test_the_compose_health_check_needs_no_password(
    entrypoint_redis: RedisServer, tmp_path: Path
) -> None:
    test = compose()["services"]["redis"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    real = shutil.which("redis-cli")
    if real is None:
        pytest.skip("needs redis-cli")
    bin_dir = tmp_path / "bin"
    fake_command(bin_dir, "redis-cli", f'exec {real} -p {entrypoint_redis.port} "$@"')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def health() -> int:
        return subprocess.run(["sh", "-c", test[1]], env=env, timeout=TIMEOUT).returncode

    assert health() == 0
    entrypoint_redis.stop()
    assert health() != 0


def run_entrypoint(
    tmp_path: Path, passwords: Mapping[str, str], redis_server: str = "exit 99"
) -> subprocess.CompletedProcess[str]:
    """The entrypoint with ``passwords`` by variable and no others, and
    first on PATH a redis-server that runs the sh script ``redis_server``."""
    bin_dir = tmp_path / "bin"
    fake_command(bin_dir, "redis-server", redis_server)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_REDIS_PASSWORD")}
    env |= {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp_path), **passwords}
    return subprocess.run(["sh", str(ENTRYPOINT), "--appendonly", "yes"], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)  # fmt: skip


def test_redis_server_gets_the_flags_and_not_the_passwords(tmp_path: Path) -> None:
    # (A real redis-server's /proc/PID/environ cannot tell: it writes its
    # process title over it.)
    dump = tmp_path / "redis-server.env"
    done = run_entrypoint(tmp_path, ENVIRONMENT, f'env > {dump}; printf "%s\\n" "$@"')
    assert done.returncode == 0, done.stderr
    rendered = str(tmp_path / RENDERED)
    assert done.stdout.splitlines() == ["--aclfile", rendered, "--appendonly", "yes"]
    assert "_REDIS_PASSWORD=" not in dump.read_text()


@pytest.mark.parametrize(
    "bad", [None, "", "two words-SECRET", "tab\there-SECRET", "trailing-newline-SECRET\n"]
)
def test_a_missing_or_unusable_password_stops_it(tmp_path: Path, bad: str | None) -> None:
    passwords = dict(ENVIRONMENT)
    if bad is None:
        del passwords[variable("ocpp-processor")]
    else:
        passwords[variable("ocpp-processor")] = bad
    done = run_entrypoint(tmp_path, passwords)
    assert done.returncode == 1, done.stderr  # not the fake redis-server's 99
    assert variable("ocpp-processor") in done.stderr
    for other in ("ocpp-admin", "ocpp-api"):
        assert variable(other) not in done.stderr
    output = done.stdout + done.stderr
    assert "SECRET" not in output
    assert not any(password in output for password in PASSWORDS.values())
    assert list(tmp_path.glob(f"{RENDERED}*")) == []


def test_every_missing_password_is_named(tmp_path: Path) -> None:
    done = run_entrypoint(tmp_path, {})
    assert done.returncode == 1
    for user in USERS:
        assert variable(user) in done.stderr


# --- docker-compose.yml ----------------------------------------------------------


def compose() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return config


def with_defaults(value: str) -> str:
    """``value`` as compose makes it with no variables set: ``${VAR:-default}``
    (the only form the file uses) becomes the default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def our_services(services: dict[str, Any]) -> dict[str, str]:
    """Our services by compose name, each with the user its command names:
    the ocpp-gateway command logs in as ocpp-gateway, and so on."""
    ours = {name: s["command"][0] for name, s in services.items() if "build" in s}
    assert set(ours) == {"ws-server", "adapter", "processor", "api", "archiver"}
    return ours


def test_compose_logs_each_service_in_as_its_own_user() -> None:
    services = compose()["services"]
    redis_env = services["redis"]["environment"]
    for name, user in our_services(services).items():
        url = services[name]["environment"]["REDIS_URL"]
        assert f"${{{variable(user)}:-" in url, name
        parts = urlsplit(with_defaults(url))
        assert (parts.username, parts.hostname, parts.port) == (user, "redis", 6379), name
        # The default is the one the redis container hashes, and URL-safe.
        assert parts.password == with_defaults(redis_env[variable(user)])
        assert parts.password and quote(parts.password, safe="") == parts.password
    # A password for every user the file has a placeholder for, and no other.
    placeholders = {m.group(1).lower() for m in PLACEHOLDER.finditer(ACL_FILE.read_text())}
    assert set(our_services(services).values()) <= placeholders <= set(shipped_rules())
    assert set(redis_env) == {variable(user) for user in placeholders}
    # The entrypoint runs from the mounted deploy/, beside the ACL file.
    redis = services["redis"]
    assert "./deploy:/etc/ocpp:ro" in redis["volumes"]
    assert redis["entrypoint"] == ["sh", "/etc/ocpp/redis-entrypoint.sh"]
    assert redis["command"][0].startswith("--")  # flags only: the script runs redis-server
    readme = (ROOT / "README.md").read_text()
    assert all(f"`{var}`" in readme for var in redis_env)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="needs docker-compose")
@pytest.mark.parametrize("given", [False, True])
def test_docker_compose_puts_the_same_password_on_both_ends(given: bool, tmp_path: Path) -> None:
    # An empty .env: one a developer keeps beside the compose file must not count.
    (tmp_path / "empty.env").touch()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_REDIS_PASSWORD")}
    env["OCPP_API_TOKEN"] = "a-token-of-the-test"
    env["OCPP_CHARGERS_FILE"] = "./deploy/chargers.example"
    if given:
        env |= {variable(user): f"given-{user}" for user in USERS}
    done = subprocess.run(
        ["docker-compose", "--env-file", str(tmp_path / "empty.env"), "-f", str(COMPOSE), "config"],
        env=env, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    password = {user: f"given-{user}" if given else f"dev-only-{user}" for user in USERS}
    assert services["redis"]["environment"] == {variable(u): password[u] for u in USERS}
    for name, user in our_services(services).items():
        assert urlsplit(services[name]["environment"]["REDIS_URL"]).password == password[user]


def compose_config(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` with ``env`` and nothing of ours from the
    caller's environment or an .env beside the file."""
    (tmp_path / "empty.env").touch()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OCPP_")} | env
    return subprocess.run(
        ["docker-compose", "--env-file", str(tmp_path / "empty.env"), "-f", str(COMPOSE), "config"],
        env=clean, capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT,
    )  # fmt: skip


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="needs docker-compose")
def test_compose_refuses_to_start_without_an_api_token(tmp_path: Path) -> None:
    chargers = {"OCPP_CHARGERS_FILE": "./deploy/chargers.example"}
    done = compose_config(tmp_path, **chargers)
    assert done.returncode != 0
    assert "set OCPP_API_TOKEN, the API's bearer token (make env writes one into .env)" in (
        done.stderr)  # fmt: skip
    done = compose_config(tmp_path, OCPP_API_TOKEN="a-token-of-the-test")
    assert done.returncode != 0
    assert "set OCPP_CHARGERS_FILE" in done.stderr
    done = compose_config(tmp_path, OCPP_API_TOKEN="a-token-of-the-test", **chargers)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert services["api"]["environment"]["OCPP_API_TOKEN"] == "a-token-of-the-test"


def test_compose_runs_the_gateway_with_charger_passwords() -> None:
    gateway = compose()["services"]["ws-server"]
    assert gateway["environment"]["OCPP_GATEWAY_BASIC_AUTH"] == "/etc/ocpp/chargers"
    [mount] = gateway["volumes"]
    # Required: no list, no start (a default would be a published password).
    assert mount.startswith("${OCPP_CHARGERS_FILE:?set OCPP_CHARGERS_FILE")
    assert mount.endswith("}:/etc/ocpp/chargers:ro")
    # The example shows the format the gateway reads.
    lines = [line for line in (ROOT / "deploy" / "chargers.example").read_text().splitlines()
             if line and not line.startswith("#")]  # fmt: skip
    assert [line.split(":", 1)[0] for line in lines] == ["EXAMPLE-CP-1"]


def test_make_env_writes_every_secret_once(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    script = tmp_path / "deploy" / "make-env.sh"
    script.write_text((ROOT / "deploy" / "make-env.sh").read_text())
    # A value kept, one empty (compose would default it: made anew), and no
    # newline at the end (what is added must not glue onto it).
    (tmp_path / ".env").write_text("OCPP_API_TOKEN=kept-as-it-was\nOCPP_ADMIN_REDIS_PASSWORD=\nX=1")
    first = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert first.returncode == 0, first.stderr
    values = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines())
    compose_vars = set(re.findall(r"\$\{(OCPP_\w+_PASSWORD|OCPP_API_TOKEN|OCPP_CHARGERS_FILE)[:}]",
                                  COMPOSE.read_text()))  # fmt: skip
    assert compose_vars <= set(values)
    assert (values["OCPP_API_TOKEN"], values["X"]) == ("kept-as-it-was", "1")
    assert values["OCPP_CHARGERS_FILE"] == "./deploy/chargers"
    secrets_made = {k: v for k, v in values.items() if k.endswith("_PASSWORD")}
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in secrets_made.values()), secrets_made
    assert oct((tmp_path / ".env").stat().st_mode & 0o777) == "0o600"
    # The chargers' list: one charger, a random password, the gateway's format.
    [charger] = [line for line in (tmp_path / "deploy" / "chargers").read_text().splitlines()
                 if not line.startswith("#")]  # fmt: skip
    cp, password = charger.split(":", 1)
    assert cp == "CP-0001" and re.fullmatch(r"[0-9a-f]{64}", password)
    again = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert "nothing changed" in again.stdout
    assert dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines()) == (
        values)  # fmt: skip
