"""The real ``ocpp-adapter`` and ``ocpp-processor`` as subprocesses, driven
the way the ws-server drives them: LPUSH onto ocpp:requests, replies popped
from ocpp:responses:{id}."""

from __future__ import annotations

import json

import pytest
import redis

from adapters.devstack import RedisServer, Service, wait_for
from processor import keys
from tests.integration.helpers import collect, push
from tests.messages import call, start

pytestmark = pytest.mark.slow

CP = "TEST-CP-PHASE2"
# The user's own Phase 2 test messages.
PHASE2 = [
    call(CP, "boot-test", "BootNotification",
         {"chargePointVendor": "TestVendor", "chargePointModel": "TestModel"}),
    call(CP, "start-test", "StartTransaction",
         {"connectorId": 1, "idTag": "RFID123", "meterStart": 0,
          "timestamp": "2024-01-01T12:00:00Z"}),
    call(CP, "heartbeat-test", "Heartbeat", {}),
]  # fmt: skip


def test_phase2_messages_are_answered(redis_db: str, client: redis.Redis) -> None:
    adapter = Service("adapters", redis_db)
    processor = Service("processor", redis_db, env={"OCPP_HEARTBEAT_INTERVAL": "120"})
    try:
        push(client, *PHASE2)
        replies = {r["message_id"]: r for r in collect(client, [CP], 3, timeout=20)}
    finally:
        assert processor.terminate() == 0
        assert adapter.terminate() == 0
    boot = replies["boot-test"]["payload"]
    assert boot[:2] == [3, "boot-test"]
    assert boot[2]["status"] == "Accepted"
    assert boot[2]["interval"] == 120
    assert boot[2]["currentTime"].endswith("Z")
    startr = replies["start-test"]["payload"][2]
    assert startr["idTagInfo"] == {"status": "Accepted"}
    assert isinstance(startr["transactionId"], int)
    assert set(replies["heartbeat-test"]["payload"][2]) == {"currentTime"}
    assert all(r["charge_point_id"] == CP for r in replies.values())


def test_sigterm_drains_what_was_taken(redis_db: str, client: redis.Redis) -> None:
    cps = [f"CP{i}" for i in range(20)]
    push(client, *[call(cps[i % 20], f"h{i}", "Heartbeat", {}) for i in range(20_000)])
    adapter = Service("adapters", redis_db)
    processor = Service("processor", redis_db, env={"OCPP_CONSUMER_NAME": "p1"})
    early = collect(client, cps, 500, timeout=20)  # it is busy now
    assert processor.terminate() == 0
    assert adapter.terminate() == 0
    # Everything the processor took was answered and acknowledged ...
    [group] = client.xinfo_groups(keys.INBOUND)
    assert group["pending"] == 0
    answered = sum(client.llen(keys.responses(cp)) for cp in cps) + len(early)
    assert answered == group["entries-read"]
    # ... and every envelope is in exactly one place: moved, or still listed.
    added = client.xinfo_stream(keys.INBOUND)["entries-added"]
    assert added + client.llen(keys.REQUESTS) == 20_000


def test_services_ride_out_a_redis_restart(private_redis: RedisServer) -> None:
    client = redis.Redis.from_url(private_redis.url)
    env = {"OCPP_CLAIM_MIN_IDLE_MS": "1000", "OCPP_CLAIM_INTERVAL_MS": "200"}
    adapter = Service("adapters", private_redis.url)
    processor = Service("processor", private_redis.url, env=env)
    try:
        push(client, *[start("CP1", f"a{i}", meter=i) for i in range(200)])
        first = collect(client, ["CP1"], 200, timeout=20)
        # Redis goes away while more frames are on their way, then comes back
        # with its data (AOF).
        push(client, *[start("CP1", f"b{i}", meter=1000 + i) for i in range(2000)])
        private_redis.restart()
        client = redis.Redis.from_url(private_redis.url)
        push(client, *[start("CP1", f"c{i}", meter=5000 + i) for i in range(200)])
        rest = collect(client, ["CP1"], 2200, timeout=30)
        assert adapter.alive() and processor.alive()
    finally:
        processor.terminate()
        adapter.terminate()
    ids = [r["message_id"] for r in first + rest]
    assert len(ids) == len(set(ids)) == 2400
    txns = [r["payload"][2]["transactionId"] for r in first + rest]
    assert len(set(txns)) == 2400
    assert client.get(keys.TXN_SEQ) == b"2400"


def test_processor_refuses_a_bad_setting(redis_db: str) -> None:
    p = Service("processor", redis_db, env={"OCPP_MAX_DELIVERIES": "many"})
    assert p.process.wait(20) == 2


def test_replies_expire(redis_db: str, client: redis.Redis) -> None:
    adapter = Service("adapters", redis_db)
    processor = Service("processor", redis_db, env={"OCPP_REPLY_TTL_S": "30"})
    try:
        push(client, PHASE2[2])
        wait_for(lambda: client.llen(keys.responses(CP)) == 1, 20, "the reply")
        assert 0 < client.ttl(keys.responses(CP)) <= 30
        assert json.loads(client.rpop(keys.responses(CP)) or b"")["message_id"] == "heartbeat-test"
    finally:
        processor.terminate()
        adapter.terminate()
