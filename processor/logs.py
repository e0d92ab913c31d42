"""Log setup shared by every service: one line per event on stderr."""

from __future__ import annotations

import logging
import sys


def setup(level: str, service: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {service}[%(process)d] %(name)s: %(message)s",
    )
