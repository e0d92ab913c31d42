"""What both baselines do as processes: connect to ``REDIS_URL``, log a line
at start and at stop, and stop within a second of SIGTERM or SIGINT."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from types import FrameType

import redis


class Stopping:
    """Set by SIGTERM or SIGINT; the loop checks it between blocking reads."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def serve(name: str, run: Callable[[redis.Redis, Stopping], int]) -> None:
    """Run ``run`` until it returns how many messages it handled."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    log = logging.getLogger(name)
    client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
    client.ping()
    log.info("%s started", name)
    try:
        handled = run(client, Stopping())
    finally:
        client.close()
    log.info("%s stopped after %d messages", name, handled)
