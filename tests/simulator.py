"""``python -m adapters.sim`` as the tests run it: a subprocess printing a
JSON summary, which they read once it has ended."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

TIMEOUT = 30.0


def sim(url: str, *args: str) -> subprocess.Popen[str]:
    """Simulated chargers against the gateway at ``url`` (``ws://host:port``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "adapters.sim", "--url", url, "--quiet", "--json", *args],
        stdout=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], *, stop: bool = True) -> dict[str, Any]:
    """The simulator's summary, once it has ended (by SIGTERM if ``stop``)."""
    if stop and process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    summary: dict[str, Any] = json.loads(out)
    return summary
