"""SIGKILL at the wrong moment, then count: every CALL answered exactly once,
no envelope lost or doubled, no transaction allocated twice."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

import pytest
import redis

from adapters.devstack import Service, wait_for
from processor import keys
from tests.integration.helpers import collect, no_more_replies, push
from tests.messages import call, start

pytestmark = pytest.mark.slow

CPS = [f"CP{i:02d}" for i in range(25)]


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


DEEP = b"[" * 5000 + b"]" * 5000


def _with_payload(raw: bytes, payload: bytes) -> bytes:
    return raw.replace(b"{}]", payload + b"]")


def _processors(client: redis.Redis) -> int:
    """Processors running, as they list themselves once they handle SIGTERM."""
    return sum(f.startswith(b"processor@") for f in client.hkeys(keys.INSTANCES))


def test_hostile_frames_stop_no_processor(redis_db: str, client: redis.Redis) -> None:
    """Frames that cost a decoder its stack, pushed through the real adapter
    and two processors: each refused to its charger or dead-lettered with
    its reason, every valid CALL after them answered, nothing pending."""
    refused = {
        "P-DEEP": _with_payload(call("P-DEEP", "x", "Heartbeat", {}), DEEP),
        "P-OBJ": _with_payload(
            call("P-OBJ", "x", "Heartbeat", {}), b'{"a":' * 5000 + b"1" + b"}" * 5000
        ),
        "P-FRAME": b'{"charge_point_id":"P-FRAME","message_type":2,"message_id":"x","payload":'
        + DEEP
        + b"}",
        "P-HUGE": _with_payload(
            call("P-HUGE", "x", "StatusNotification", {}),
            b'{"connectorId":' + b"9" * 50_000 + b',"errorCode":"NoError","status":"Available"}',
        ),
        "P-UTF8": _with_payload(call("P-UTF8", "x", "Authorize", {}), b'{"idTag":"\xff"}'),
    }
    dead = [
        b'{"message_type":2,"payload":' + DEEP + b"}",  # no charger to tell
        _with_payload(call("P-REPLY", "x", "Heartbeat", {}), DEEP)
        .replace(b'"message_type": 2', b'"message_type": 3')
        .replace(b'[2, "x", "Heartbeat", ', b'[3, "x", '),  # a reply is never answered
        b"\xff" + DEEP,
    ]
    n = 500
    valid = [call(CPS[i % len(CPS)], f"h{i}", "Heartbeat", {}) for i in range(n)]
    services = [Service("adapters", redis_db), *(Service("processor", redis_db) for _ in range(2))]
    try:
        # Both processors up before the poison arrives: each must survive it.
        wait_for(lambda: _processors(client) == 2, 20, "both processors to start")
        push(client, *refused.values(), *dead, *valid)
        replies = collect(client, CPS, n, timeout=30)
        errors = collect(client, list(refused), len(refused), timeout=10)
        wait_for(lambda: client.xlen(keys.DEAD) == len(dead), 10, "the dead letters")
        wait_for(lambda: client.xpending(keys.INBOUND, keys.GROUP)["pending"] == 0, 10, "acks")
        assert all(s.alive() for s in services)
        assert [s.terminate() for s in services] == [0, 0, 0]
    finally:
        for s in services:
            if s.alive():
                s.kill()
    assert sorted(r["message_id"] for r in replies) == sorted(f"h{i}" for i in range(n))
    assert all(r["message_type"] == 3 for r in replies)
    assert sorted(e["charge_point_id"] for e in errors) == sorted(refused)
    for e in errors:
        assert e["payload"][:3] == [4, "x", "FormationViolation"] and e["payload"][3], e
    deep_ones = [e for e in errors if e["charge_point_id"] in ("P-DEEP", "P-OBJ", "P-FRAME")]
    assert {e["payload"][3] for e in deep_ones} == {"JSON nested deeper than 64 levels"}
    reasons = [f[b"reason"].decode() for _, f in client.xrange(keys.DEAD)]
    assert all(reasons), reasons
    assert no_more_replies(client, [*CPS, *refused, "P-REPLY"])
