"""A processor says once when history piles up with no archiver to read it."""

from __future__ import annotations

import logging

import pytest
from redis.asyncio import Redis

from processor import keys
from processor.__main__ import warn_without_archiver

pytestmark = pytest.mark.anyio


async def test_history_with_no_archiver_is_warned_of(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await redis.xadd(keys.HISTORY, {"1-0": b"\x90"})
    with caplog.at_level(logging.WARNING, logger="processor"):
        await warn_without_archiver(redis, every_s=0)
    assert [r.getMessage() for r in caplog.records] == [
        "no ocpp-archiver reads ocpp:history: history accumulates in Redis until one runs "
        "(README, ocpp-archiver)"
    ]


async def test_an_archiver_group_silences_it(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await redis.xgroup_create(keys.HISTORY, keys.ARCHIVERS, "0", mkstream=True)
    with caplog.at_level(logging.WARNING, logger="processor"):
        await warn_without_archiver(redis, every_s=0)
    assert caplog.records == []
