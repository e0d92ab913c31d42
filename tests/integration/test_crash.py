"""SIGKILL at the wrong moment, then count: every CALL answered exactly once,
no envelope lost or doubled, no transaction allocated twice."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from adapters.devstack import Service, wait_for
from processor import keys
from tests.integration.helpers import collect, no_more_replies, push
from tests.messages import start

pytestmark = pytest.mark.slow

CPS = [f"CP{i:02d}" for i in range(25)]


@pytest.fixture
def client(redis_db: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_db)
    yield c
    c.close()


def starts(n: int) -> list[bytes]:
    # Distinct content per message: n StartTransactions mean n transactions.
    return [start(CPS[i % len(CPS)], f"s{i}", meter=i) for i in range(n)]


def pending_of(client: redis.Redis, consumer: str) -> int:
    for c in client.xinfo_consumers(keys.INBOUND, keys.GROUP):
        if c["name"] == consumer.encode():
            return int(c["pending"])
    return 0


def test_killed_processor_entries_are_taken_over(redis_db: str, client: redis.Redis) -> None:
    n = 20_000
    push(client, *starts(n))
    fast_claim = {"OCPP_CLAIM_MIN_IDLE_MS": "1000", "OCPP_CLAIM_INTERVAL_MS": "200"}
    adapter = Service("adapters", redis_db)
    victim = Service("processor", redis_db, env={**fast_claim, "OCPP_CONSUMER_NAME": "victim"})
    survivor = Service("processor", redis_db, env={**fast_claim, "OCPP_CONSUMER_NAME": "survivor"})
    try:
        replies = collect(client, CPS, 2000, timeout=30)

        # Freeze the victim until it is caught holding entries it has not
        # acknowledged, then kill it: a crash in the middle of a batch.
        def caught() -> bool:
            os.kill(victim.pid, signal.SIGSTOP)
            if pending_of(client, "victim") > 0:
                return True
            os.kill(victim.pid, signal.SIGCONT)
            return False

        wait_for(caught, 20, "the victim to hold un-acked entries", interval=0.001)
        held = pending_of(client, "victim")
        victim.kill()
        replies += collect(client, CPS, n - len(replies), timeout=60)
        wait_for(lambda: client.xpending(keys.INBOUND, keys.GROUP)["pending"] == 0, 10, "acks")
        assert survivor.terminate() == 0
        assert adapter.terminate() == 0
    finally:
        for s in (victim, survivor, adapter):
            if s.alive():
                s.kill()
    assert held > 0
    counts = Counter(r["message_id"] for r in replies)
    assert len(counts) == n and max(counts.values()) == 1
    assert no_more_replies(client, CPS)
    txns = [r["payload"][2]["transactionId"] for r in replies]
    assert len(set(txns)) == n
    assert client.get(keys.TXN_SEQ) == str(n).encode()


def test_killed_adapter_loses_and_doubles_nothing(redis_db: str, client: redis.Redis) -> None:
    n = 200_000
    sent = [json.dumps({"n": i}).encode() for i in range(n)]
    for chunk in range(0, n, 10_000):
        client.lpush(keys.REQUESTS, *sent[chunk : chunk + 10_000])
    kills = 0
    # Kill adapters again and again while they move, two at a time.
    while client.llen(keys.REQUESTS) > 0 and kills < 6:
        before = client.xlen(keys.INBOUND)
        adapters = [
            Service("adapters", redis_db, env={"OCPP_ADAPTER_BATCH": "97"}) for _ in range(2)
        ]

        def moved(b: int = before) -> bool:
            return client.xlen(keys.INBOUND) > b + 5000 or client.llen(keys.REQUESTS) == 0

        wait_for(moved, 30, "the adapters to move")
        for a in adapters:
            a.kill()
        kills += 1
    last = Service("adapters", redis_db)
    wait_for(lambda: client.llen(keys.REQUESTS) == 0, 60, "the list to drain")
    assert last.terminate() == 0
    assert kills >= 2
    moved = [f[b"e"] for _, f in client.xrange(keys.INBOUND)]
    assert len(moved) == n
    assert len(set(moved)) == n
    # Envelopes from one list keep their arrival order whichever adapter moved them.
    assert moved == sent
