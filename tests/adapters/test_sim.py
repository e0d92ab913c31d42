"""``python -m adapters.sim`` against the whole system: gateway, adapter and
processor as subprocesses on a real Redis, the simulator as a subprocess too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis as redis_sync

from adapters.devstack import Service, free_port, listening, wait_for
from processor import keys
from processor.command_queue import CommandQueue
from processor.redis_io import connect
from tests.simulator import finish, sim

pytestmark = [pytest.mark.slow]

TIMEOUT = 30.0
# Commands a simulated charger answers, and the status it answers with.
COMMANDS = [
    ("TriggerMessage", b'{"requestedMessage":"Heartbeat"}', "Accepted"),
    ("ChangeConfiguration", b'{"key":"HeartbeatInterval","value":"60"}', "Accepted"),
    ("ChangeAvailability", b'{"connectorId":1,"type":"Operative"}', "Accepted"),
    ("UnlockConnector", b'{"connectorId":1}', "Unlocked"),
    ("ClearCache", b"{}", "Accepted"),
    ("DataTransfer", b'{"vendorId":"acme"}', "Rejected"),
    ("RemoteStopTransaction", b'{"transactionId":999999}', "Rejected"),
    ("Reset", b'{"type":"Soft"}', "Accepted"),
]


@dataclass
class Stack:
    redis_url: str
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


@pytest.fixture
def stack(redis_db: str) -> Iterator[Stack]:
    """Gateway, adapter and processor on ``redis_db``; each must exit 0 on SIGTERM."""
    port = free_port()
    gateway_env = {"OCPP_GATEWAY_HOST": "127.0.0.1", "OCPP_GATEWAY_PORT": str(port)}
    services = [
        Service("adapters.gateway", redis_db, env=gateway_env),
        Service("adapters", redis_db),
        Service("processor", redis_db, env={"OCPP_READ_BLOCK_MS": "200"}),
    ]
    try:
        gateway = services[0]
        wait_for(lambda: not gateway.alive() or listening(port), TIMEOUT, "the gateway")
        assert gateway.alive(), "the gateway exited at start"
        yield Stack(redis_db, port)
    finally:
        codes = [service.terminate() for service in services]
    assert codes == [0, 0, 0]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def transactions(client: redis_sync.Redis) -> list[dict[str, str]]:
    """Every ``ocpp:txn:{id}`` hash, decoded."""
    found = []
    for key in client.scan_iter(match="ocpp:txn:*"):
        name = _text(key)
        parts = name.split(":")
        if len(parts) == 3 and parts[2].isdigit():
            found.append({_text(k): _text(v) for k, v in client.hgetall(name).items()})
    return found


def test_a_fleet_runs_its_sessions_through_the_system(stack: Stack) -> None:
    process = sim(stack.url, "--chargers", "5", "--sessions", "2")
    summary = finish(process, stop=False)
    assert process.returncode == 0, summary
    assert summary["chargers"] == 5 and summary["connected"] == 5
    assert summary["sessions_completed"] == 10
    assert summary["errors"] == 0
    # boot, status, heartbeat + per session: authorize, start, status, 3 meter, stop, status
    assert summary["messages_sent"] == 5 * (3 + 2 * 8)
    lat = summary["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]

    client = redis_sync.Redis.from_url(stack.redis_url)
    try:
        txns = transactions(client)
        assert len(txns) == 10
        assert all("stop_timestamp" in t for t in txns)
        assert all(int(t["meter_stop"]) > int(t["meter_start"]) for t in txns)
        assert {t["charge_point_id"] for t in txns} == {f"SIM-{n:04d}" for n in range(1, 6)}
        assert client.scard(keys.ACTIVE_TRANSACTIONS) == 0
    finally:
        client.close()


@pytest.mark.anyio
async def test_a_sim_charger_answers_and_carries_out_a_remote_start(stack: Stack) -> None:
    process = sim(stack.url, "--chargers", "1", "--sessions", "0", "--linger", "120",
                  "--prefix", "RS")  # fmt: skip
    client = redis_sync.Redis.from_url(stack.redis_url)
    redis = connect(stack.redis_url)
    try:
        wait_for(
            lambda: process.poll() is not None or client.sismember(keys.CHARGE_POINTS, "RS-0001"),
            TIMEOUT, "the simulated charger to boot",
        )  # fmt: skip
        assert process.poll() is None, "the simulator exited early"
        queue = CommandQueue(redis)
        sent = await queue.send(
            "RS-0001", "RemoteStartTransaction", b'{"idTag":"X","connectorId":1}'
        )
        record = await queue.wait(sent.command_id, 10)
        assert record is not None and record.state == "answered", record
        assert record.fields["status"] == "Accepted"

        def closed_remote_session() -> bool:
            return any(t.get("id_tag") == "X" and "stop_timestamp" in t
                       for t in transactions(client))  # fmt: skip

        wait_for(closed_remote_session, TIMEOUT, "the remote-started session to close")

        sent = await queue.send(
            "RS-0001", "GetConfiguration", b'{"key":["HeartbeatInterval","Nope"]}'
        )
        record = await queue.wait(sent.command_id, 10)
        assert record is not None and record.state == "answered", record
        result = json.loads(record.fields["result"])
        assert [c["key"] for c in result["configurationKey"]] == ["HeartbeatInterval"]
        assert result["unknownKey"] == ["Nope"]

        for action, body, status in COMMANDS:
            sent = await queue.send("RS-0001", action, body)
            record = await queue.wait(sent.command_id, 10)
            assert record is not None and record.state == "answered", (action, record)
            assert record.fields.get("status") == status, (action, record.fields)
    finally:
        await redis.aclose()
        client.close()
    summary = finish(process)
    assert process.returncode == 0, summary
    assert summary["commands_by_action"] == {
        "RemoteStartTransaction": 1,
        "GetConfiguration": 1,
        **{action: 1 for action, _, _ in COMMANDS},
    }
    assert summary["sessions_completed"] == summary["remote_sessions"] == 1
    assert summary["errors"] == 0
