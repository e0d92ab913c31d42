"""Processes for running the system on one machine: a private redis-server
and a private PostgreSQL on free ports, and the services as subprocesses. The demo, the integration
tests and the benchmarks share these, so they all run the real thing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Self
from urllib.parse import quote

import anyio
import asyncpg
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, and not one this process handed out
    before: the kernel may offer a port again as soon as it is released, so
    two services started one after the other could otherwise get the same."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.01
) -> None:
    """Poll ``condition()`` until it is true; raise TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def wait_until(condition: Callable[[], Awaitable[object]], interval: float = 0.01) -> None:
    """Poll ``condition()``, awaited (a query), until it is true: :func:`wait_for`
    for async code, whose deadline the caller sets (``anyio.fail_after``).
    Polling, since what it waits on (another process) sends no event."""
    while True:
        if await condition():
            return
        await anyio.sleep(interval)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS-only redis-server: its certificate and key, and
    the CA its clients trust (which may be the certificate itself)."""

    cert: Path
    key: Path
    ca: Path


class LocalServer(ABC):
    """A server process of the tests' or the demo's own, in a data directory
    that is removed with it if it made it; killable and restartable on the
    same port and directory, so a restart keeps its data."""

    process: subprocess.Popen[bytes] | None
    directory: Path
    _own_dir: bool

    @abstractmethod
    def start(self, timeout: float = ...) -> Self: ...

    @abstractmethod
    def stop(self, sig: int = ..., timeout: float = ...) -> None:
        """Stop it with ``sig`` (each server's clean shutdown by default)."""

    def kill(self) -> None:
        """SIGKILL: a crash."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        if self.process is not None:
            self.kill()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# Redis rewrites its AOF when it has doubled and is over this size. Our
# Redis holds little (hot state, streams trimmed as they are read) but
# writes a lot, ~1.5 KB of AOF a field-mix message: at the default 64 MB it
# forked a rewrite every few seconds under full load, 13% of its CPU. What
# this costs is disk (the AOF grows to this before a rewrite) and restart
# time (Redis replays it). docker-compose.yml sets the same.
AOF_REWRITE_MIN_SIZE = "512mb"


class RedisServer(LocalServer):
    """A private ``redis-server`` with AOF on, killable and restartable on
    the same port and data directory (so a restart keeps its data).

    ``args`` are more ``redis-server`` options (say ``--aclfile``); with
    ``tls`` it serves TLS only, on ``port``, and ``url`` is ``rediss://``.
    ``command``, if given, runs instead of ``redis-server`` with the same
    options: a wrapper that ends by running it with them, such as the
    container's ``deploy/redis-entrypoint.sh``."""

    def __init__(
        self,
        port: int | None = None,
        directory: Path | None = None,
        *,
        args: Sequence[str] = (),
        tls: TlsFiles | None = None,
        command: Sequence[str] = (),
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: apt-get install -y redis-server")
        self.binary = binary
        self.port = port or free_port()
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="ocpp-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.args = list(args)
        self.tls = tls
        self.command = list(command) or [binary]

    @property
    def url(self) -> str:
        if self.tls is None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(self.tls.ca))}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            listen = [
                "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key),
                "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no",
            ]  # fmt: skip
        args = [
            *self.command,
            *listen,
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--auto-aof-rewrite-min-size", AOF_REWRITE_MIN_SIZE,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
            *self.args,
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        # No retries of its own: ready() is polled, and a refused login
        # (the default user is off) would be retried for seconds.
        client = redis.Redis.from_url(
            self.url, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.directory / 'redis.log'}")
            try:
                return bool(client.ping())
            except redis.AuthenticationError:
                return True  # it answers; its default user is off (an aclfile)
            except (redis.ConnectionError, redis.BusyLoadingError):
                return False

        try:
            wait_for(ready, timeout, f"redis-server on port {self.port}")
        finally:
            client.close()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """SIGTERM lets Redis flush its AOF; SIGKILL is a crash."""
        if self.process is None:
            return
        self.process.send_signal(sig)
        self.process.wait(timeout)
        self.process = None


def _postgres_bin(name: str) -> str | None:
    """``name`` (initdb, postgres) on PATH, else from Debian's versioned
    directory, which is not on PATH; the newest version there."""
    found = shutil.which(name)
    if found is not None:
        return found
    versions = [Path(path) for path in glob.glob(f"/usr/lib/postgresql/*/bin/{name}")]
    versions = [path for path in versions if path.parent.parent.name.isdigit()]
    return str(max(versions, key=lambda path: int(path.parent.parent.name))) if versions else None


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (zombies do not count:
    they hold no shared memory any more)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class PostgresServer(LocalServer):
    """A private PostgreSQL (initdb on first start) listening on 127.0.0.1
    only, killable and restartable on the same port and data directory.

    PostgreSQL refuses to run as root, so as root initdb and the server run
    as the ``postgres`` system user, which then owns ``directory``. They are
    started with ``Popen(user=...)`` rather than through ``runuser``: the
    process we hold is then the postmaster itself, which a SIGKILL reaches.
    ``fsync`` stays on as in production unless a test asks otherwise."""

    def __init__(
        self, port: int | None = None, directory: Path | None = None, *, fsync: bool = True
    ) -> None:
        initdb, postgres = _postgres_bin("initdb"), _postgres_bin("postgres")
        if initdb is None or postgres is None:
            raise RuntimeError(
                "PostgreSQL not found (initdb, postgres): apt-get install -y postgresql"
            )
        self.initdb, self.postgres = initdb, postgres
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, PostgreSQL needs the postgres system user:"
                    " apt-get install -y postgresql"
                ) from None
        self.port = port or free_port()
        self.fsync = fsync
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="ocpp-pg-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "postgres.log"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        """The URL of ``database`` on this server (superuser ``postgres``, no password)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _popen(self, args: Sequence[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        """``args`` in ``directory``, as the postgres user when we are root."""
        user = self.user
        return subprocess.Popen(
            args, stdout=log, stderr=log, cwd=self.directory,
            # A session (process group) of its own: kill() ends the backends too.
            start_new_session=True,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )  # fmt: skip

    def _initdb(self) -> None:
        (self.directory / "socket").mkdir(exist_ok=True)
        if self.user is not None:
            for path in (self.directory, self.directory / "socket"):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        # --no-sync skips initdb's own flush of a throwaway cluster; the
        # server's fsync setting is another matter.
        with self.log.open("ab") as log:
            initdb = self._popen(
                [self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"],
                log,
            )  # fmt: skip
        if initdb.wait() != 0:
            raise RuntimeError(f"initdb failed: see {self.log}")

    def _status(self) -> str:
        """The postmaster's state from its lock file ("ready" once it accepts
        connections, as pg_ctl reads it); empty until our postmaster wrote it."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return ""
        # A file a killed server left names its pid, not ours.
        if self.process is None or len(lines) < 8 or lines[0] != str(self.process.pid):
            return ""
        return lines[7].strip()

    def start(self, timeout: float = 30.0) -> PostgresServer:
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        args = [
            self.postgres, "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.directory / 'socket'}",
            "-c", f"fsync={'on' if self.fsync else 'off'}",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = self._popen(args, log)

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: see {self.log}")
            return self._status() == "ready"

        wait_for(ready, timeout, f"postgres on port {self.port}")
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> None:
        """SIGINT is PostgreSQL's fast shutdown (clients are disconnected, a
        checkpoint written); SIGTERM would wait for every client to leave.
        SIGKILL is a crash: it goes to the backends too, as when the machine
        dies, and returns once none is left holding the shared memory the
        next start checks."""
        if self.process is None:
            return
        if sig == signal.SIGKILL:
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.send_signal(sig)
        self.process.wait(timeout)
        pgid, self.process = self.process.pid, None
        wait_for(lambda: not _group_alive(pgid), timeout, "postgres backends to exit")


async def wipe_schema(url: str) -> None:
    """Empty the ``public`` schema of the PostgreSQL at ``url``: everything
    the archiver creates lives there (a schema of its own would survive)."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
    finally:
        await connection.close()


def console_script(name: str) -> str:
    """The path of our console script ``name``, installed with this interpreter."""
    return str(Path(sys.executable).parent / name)


class Service:
    """One of our services (``python -m <module>``) as a subprocess; with
    ``script``, that console script instead, as installed beside this
    interpreter (``ocpp-api`` and the like: what a user runs).

    Its health probes are off unless ``health_port`` is given: several
    services, and several processors, share this machine, and each service's
    default port could be taken."""

    def __init__(
        self,
        module: str,
        redis_url: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log: IO[bytes] | None = None,
        health_port: int = 0,
        *,
        script: str = "",
    ) -> None:
        full_env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "OCPP_HEALTH_PORT": str(health_port),
            **(env or {}),
        }
        self.module = module
        self.health_port = health_port
        command = [console_script(script)] if script else [sys.executable, "-m", module]
        self.process = subprocess.Popen(
            [*command, *args],
            env=full_env,
            stdout=log or subprocess.DEVNULL,
            stderr=log or None,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        self.process.kill()
        self.process.wait()

    def alive(self) -> bool:
        return self.process.poll() is None
