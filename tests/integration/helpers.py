"""Shared pieces of the integration tests: pushing frames, popping replies."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from processor import keys


def push(client: redis.Redis, *raws: bytes) -> None:
    """What the ws-server does for each frame a charger sends."""
    pipe = client.pipeline(transaction=False)
    for raw in raws:
        pipe.lpush(keys.REQUESTS, raw)
    pipe.execute()


def collect(client: redis.Redis, cps: list[str], n: int, timeout: float) -> list[dict[str, Any]]:
    """Pop replies for ``cps`` until ``n`` arrived; fail after ``timeout`` s."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    reply_keys = [keys.responses(cp) for cp in cps]
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"got {len(out)} of {n} replies in {timeout}s")
        got: Any = client.blmpop(min(left, 1.0), len(reply_keys), *reply_keys,
                                 direction="RIGHT", count=1000)  # fmt: skip
        if got:
            out.extend(json.loads(raw) for raw in got[1])
    return out


def no_more_replies(client: redis.Redis, cps: list[str]) -> bool:
    return all(client.llen(keys.responses(cp)) == 0 for cp in cps)
