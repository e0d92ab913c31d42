"""Processes for running the system on one machine: a private redis-server
on a free port and the services as subprocesses. The demo, the integration
tests and the benchmarks share these, so they all run the real thing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


class RedisServer:
    """A private ``redis-server`` with AOF on, killable and restartable on
    the same port and data directory (so a restart keeps its data)."""

    def __init__(self, port: int | None = None, directory: Path | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: apt-get install -y redis-server")
        self.binary = binary
        self.port = port or free_port()
        self._own_dir = directory is None
        self.directory = directory or Path(tempfile.mkdtemp(prefix="ocpp-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.directory / 'redis.log'}")
            try:
                return bool(client.ping())
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

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        if self.process is not None:
            self.stop(signal.SIGKILL)
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class Service:
    """One of our services (``python -m <module>``) as a subprocess.

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
    ) -> None:
        full_env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "OCPP_HEALTH_PORT": str(health_port),
            **(env or {}),
        }
        self.module = module
        self.health_port = health_port
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
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
