"""``python -m adapters.sim`` against the whole system: gateway, adapter and
processor as subprocesses on a real Redis, the simulator as a subprocess too.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis as redis_sync

from adapters.devstack import Service, free_port, listening, wait_for
from adapters.sim_settings import assign_protocols, parse, protocol_shares
from adapters.sim_stats import Stats, render
from processor import keys
from processor.command_queue import CommandQueue
from processor.redis_io import connect
from tests.simulator import finish, sim

# The tests that start the stack; those of --protocol's parsing need none.
slow = pytest.mark.slow

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


def lingering(
    stack: Stack, client: redis_sync.Redis, prefix: str, *args: str
) -> subprocess.Popen[str]:
    """One simulated charger, ``{prefix}-0001``, that runs no session of its
    own and stays online; once it has booted."""
    process = sim(stack.url, "--chargers", "1", "--sessions", "0", "--linger", "120",
                  "--prefix", prefix, *args)  # fmt: skip
    cp = f"{prefix}-0001"
    wait_for(lambda: process.poll() is not None or client.sismember(keys.CHARGE_POINTS, cp),
             TIMEOUT, f"{cp} to boot")  # fmt: skip
    assert process.poll() is None, "the simulator exited early"
    return process


@slow
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


@slow
@pytest.mark.anyio
async def test_a_sim_charger_answers_and_carries_out_a_remote_start(stack: Stack) -> None:
    client = redis_sync.Redis.from_url(stack.redis_url)
    process = lingering(stack, client, "RS")
    redis = connect(stack.redis_url)
    try:
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


# --- OCPP 2.0.1 stations, alone and beside 1.6 chargers ----------------------------

OCPP201 = "ocpp2.0.1"
# Commands a simulated 2.0.1 station answers, and the status it answers with.
COMMANDS_201 = [
    ("TriggerMessage", b'{"requestedMessage":"Heartbeat"}', "Accepted"),
    ("TriggerMessage", b'{"requestedMessage":"StatusNotification",'
                       b'"evse":{"id":1,"connectorId":1}}', "Accepted"),
    ("TriggerMessage", b'{"requestedMessage":"MeterValues"}', "Accepted"),
    # Booted and accepted already (F06.FR.17).
    ("TriggerMessage", b'{"requestedMessage":"BootNotification"}', "Rejected"),
    ("TriggerMessage", b'{"requestedMessage":"SignV2GCertificate"}', "NotImplemented"),
    ("ChangeAvailability", b'{"operationalStatus":"Operative"}', "Accepted"),
    ("ChangeAvailability", b'{"operationalStatus":"Operative","evse":{"id":2}}', "Rejected"),
    ("UnlockConnector", b'{"evseId":1,"connectorId":1}', "Unlocked"),
    ("UnlockConnector", b'{"evseId":1,"connectorId":2}', "UnknownConnector"),
    ("ClearCache", b"{}", "Accepted"),
    ("DataTransfer", b'{"vendorId":"acme"}', "UnknownVendorId"),
    ("RequestStopTransaction", b'{"transactionId":"not-ours"}', "Rejected"),
    ("Reset", b'{"type":"OnIdle"}', "Accepted"),
]  # fmt: skip


def transactions_201(client: redis_sync.Redis) -> dict[str, dict[str, str]]:
    """Every 2.0.1 transaction's hash (``ocpp:cp:{station}:txn:{id}``), by key."""
    return {
        _text(key): {_text(k): _text(v) for k, v in client.hgetall(key).items()}
        for key in client.scan_iter(match=f"{keys.CHARGE_POINT_PREFIX}*:txn:*")
    }


@slow
def test_a_201_fleet_runs_its_sessions_as_transaction_events(stack: Stack) -> None:
    process = sim(stack.url, "--chargers", "4", "--sessions", "2", "--protocol", OCPP201)
    summary = finish(process, stop=False)
    assert process.returncode == 0, summary
    assert summary["errors"] == 0
    assert summary["sessions_completed"] == 8 and summary["connected"] == 4
    # boot, status, heartbeat + per session: authorize, Started, status, 3 Updated, Ended, status
    assert summary["messages_sent"] == 4 * (3 + 2 * 8)
    assert summary["by_protocol"] == {
        OCPP201: {"chargers": 4, "connected": 4, "sessions_completed": 8,
                  "remote_sessions": 0, "messages_sent": 4 * (3 + 2 * 8)},
    }  # fmt: skip

    client = redis_sync.Redis.from_url(stack.redis_url)
    try:
        stations = [f"SIM-{n:04d}" for n in range(1, 5)]
        for station in stations:
            assert client.hget(keys.charge_point(station), "protocol") == OCPP201.encode()
            connector = client.hget(keys.evse_connector(station, 1, 1), "status")
            assert connector == b"Available"
        txns = transactions_201(client)
        assert len(txns) == 8
        # A fresh uuid per session, under its station; every event applied (seqNo 0..4).
        assert {k.split(":")[2] for k in txns} == set(stations)
        assert all(len(k.split(":txn:")[1]) == 36 for k in txns)
        for t in txns.values():
            assert t["event_type"] == "Ended" and t["stopped_reason"] == "Local", t
            assert int(t["seq_no"]) == 4 and "ended_at" in t and "started_at" in t, t
            assert (t["evse_id"], t["connector_id"], t["id_token_type"]) == ("1", "1", "ISO14443")
        assert transactions(client) == []  # no 1.6 transaction
    finally:
        client.close()


@slow
def test_a_mixed_fleet_shares_its_chargers_between_the_versions(stack: Stack) -> None:
    process = sim(stack.url, "--chargers", "6", "--sessions", "1",
                  "--protocol", "ocpp1.6=0.5,ocpp2.0.1=0.5")  # fmt: skip
    summary = finish(process, stop=False)
    assert process.returncode == 0, summary
    assert summary["errors"] == 0
    assert summary["sessions_completed"] == 6 and summary["connected"] == 6
    each = {"chargers": 3, "connected": 3, "sessions_completed": 3, "remote_sessions": 0,
            "messages_sent": 3 * (3 + 8)}  # fmt: skip
    assert summary["by_protocol"] == {"ocpp1.6": each, OCPP201: each}

    client = redis_sync.Redis.from_url(stack.redis_url)
    try:
        # By charger number: odd ones 1.6, even ones 2.0.1.
        assert {t["charge_point_id"] for t in transactions(client)} == {
            "SIM-0001", "SIM-0003", "SIM-0005"
        }  # fmt: skip
        assert {k.split(":")[2] for k in transactions_201(client)} == {
            "SIM-0002", "SIM-0004", "SIM-0006"
        }  # fmt: skip
        for n in range(1, 7):
            protocol = client.hget(keys.charge_point(f"SIM-{n:04d}"), "protocol")
            assert protocol == (b"ocpp1.6" if n % 2 else OCPP201.encode())
    finally:
        client.close()


@slow
@pytest.mark.anyio
async def test_a_sim_station_answers_and_carries_out_2_0_1_commands(stack: Stack) -> None:
    client = redis_sync.Redis.from_url(stack.redis_url)
    # Sessions of many meter values: long enough to be stopped remotely.
    process = lingering(stack, client, "RS201", "--protocol", OCPP201, "--meter-values", "100000")
    redis = connect(stack.redis_url)
    station = "RS201-0001"
    try:
        queue = CommandQueue(redis)

        async def command(action: str, body: bytes) -> dict[str, str]:
            sent = await queue.send(station, action, body, protocol=OCPP201)
            record = await queue.wait(sent.command_id, 10)
            assert record is not None and record.state == "answered", (action, record)
            return record.fields

        start = b'{"idToken":{"idToken":"X201","type":"Central"},"remoteStartId":42}'
        assert (await command("RequestStartTransaction", start))["status"] == "Accepted"

        wait_for(lambda: bool(transactions_201(client)), TIMEOUT, "the remote-started session")
        [(key, txn)] = transactions_201(client).items()
        assert (txn["id_token"], txn["id_token_type"], txn["remote_start_id"]) == (
            "X201", "Central", "42"
        )  # fmt: skip
        # Busy: a second start is refused, and so is an unlock under way.
        assert (await command("RequestStartTransaction", start))["status"] == "Rejected"
        unlock = b'{"evseId":1,"connectorId":1}'
        assert (await command("UnlockConnector", unlock))[
            "status"
        ] == "OngoingAuthorizedTransaction"
        tx = key.split(":txn:")[1]
        stop = json.dumps({"transactionId": tx}).encode()
        assert (await command("RequestStopTransaction", stop))["status"] == "Accepted"

        def ended() -> bool:
            return client.hget(key, "stopped_reason") == b"Remote"

        wait_for(ended, TIMEOUT, "the remote-stopped session to end")
        assert client.hget(key, "trigger_reason") == b"RemoteStop"

        get = {"getVariableData": [
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "Nope"}},
            {"component": {"name": "NoSuchCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
            {"component": {"name": "AuthCtrlr"}, "variable": {"name": "AuthorizeRemoteStart"},
             "attributeType": "Target"},
        ]}  # fmt: skip
        got = json.loads((await command("GetVariables", json.dumps(get).encode()))["result"])
        answers = [
            (r["attributeStatus"], r.get("attributeValue")) for r in got["getVariableResult"]
        ]
        assert answers == [
            ("Accepted", "300"), ("UnknownVariable", None), ("UnknownComponent", None),
            ("NotSupportedAttributeType", None),
        ]  # fmt: skip
        set_ = {"setVariableData": [
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
             "attributeValue": "60"},
            {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
             "attributeValue": "often"},
            {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "SecurityProfile"},
             "attributeValue": "2"},
        ]}  # fmt: skip
        done = json.loads((await command("SetVariables", json.dumps(set_).encode()))["result"])
        statuses = [r["attributeStatus"] for r in done["setVariableResult"]]
        assert statuses == ["Accepted", "Rejected", "Rejected"]
        got = json.loads((await command("GetVariables", json.dumps(get).encode()))["result"])
        assert got["getVariableResult"][0]["attributeValue"] == "60"

        for action, body, status in COMMANDS_201:
            fields = await command(action, body)
            assert fields.get("status") == status, (action, body, fields)
    finally:
        await redis.aclose()
        client.close()
    summary = finish(process)
    assert process.returncode == 0, summary
    assert summary["errors"] == 0, summary
    counted = Counter(action for action, _, _ in COMMANDS_201)
    counted.update({"RequestStartTransaction": 2, "UnlockConnector": 1,
                    "RequestStopTransaction": 1, "GetVariables": 2, "SetVariables": 1})  # fmt: skip
    assert summary["commands_by_action"] == dict(counted)
    assert summary["sessions_completed"] == summary["remote_sessions"] == 1
    assert summary["by_protocol"][OCPP201]["remote_sessions"] == 1


# --- --protocol: which version each charger speaks ---------------------------------


@pytest.mark.parametrize(
    ("text", "shares"),
    [
        ("ocpp1.6", {"ocpp1.6": 1.0}),
        (" ocpp2.0.1 ", {OCPP201: 1.0}),
        ("ocpp1.6=0.7,ocpp2.0.1=0.3", {"ocpp1.6": 0.7, OCPP201: 0.3}),
        ("ocpp2.0.1 = 3, ocpp1.6 = 1", {OCPP201: 0.75, "ocpp1.6": 0.25}),  # scaled to 1
        ("ocpp1.6=0,ocpp2.0.1=1", {"ocpp1.6": 0.0, OCPP201: 1.0}),
    ],
)
def test_protocol_shares_are_read_and_scaled(text: str, shares: dict[str, float]) -> None:
    got = protocol_shares(text)
    assert list(got) == list(shares)
    assert got == pytest.approx(shares)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("ocpp2.0", "protocol 'ocpp2.0' is not ocpp1.6 or ocpp2.0.1"),
        ("", "protocol '' is not ocpp1.6 or ocpp2.0.1"),
        ("ocpp1.6,ocpp2.0.1", "ocpp1.6 among several protocols needs a share: ocpp1.6=0.5"),
        ("ocpp1.6=0.5,ocpp1.6=0.5", "protocol ocpp1.6 given twice"),
        ("ocpp1.6=half,ocpp2.0.1=0.5", "share of ocpp1.6 is not a number: 'half'"),
        ("ocpp1.6=-0.5,ocpp2.0.1=1.5", "share of ocpp1.6 must be a number >= 0, not -0.5"),
        ("ocpp1.6=nan", "share of ocpp1.6 must be a number >= 0, not nan"),
        ("ocpp1.6=0,ocpp2.0.1=0", "protocol shares add up to 0"),
    ],
)
def test_protocol_shares_refuse_what_they_cannot_read(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        protocol_shares(text)


def test_protocols_are_assigned_by_charger_number_within_one_of_the_shares() -> None:
    shares = protocol_shares("ocpp1.6=0.7,ocpp2.0.1=0.3")
    fleet = assign_protocols(shares, 100)
    # Reproducible, and a charger's version does not depend on the fleet's size.
    assert fleet == assign_protocols(shares, 100)
    assert assign_protocols(shares, 10) == fleet[:10]
    for n in range(1, 101):
        assert abs(fleet[:n].count(OCPP201) - 0.3 * n) < 1, n
    assert fleet.count(OCPP201) == 30
    # Halves alternate, the first listed first.
    assert assign_protocols(protocol_shares("ocpp1.6=0.5,ocpp2.0.1=0.5"), 4) == [
        "ocpp1.6", OCPP201, "ocpp1.6", OCPP201,
    ]  # fmt: skip
    assert assign_protocols(protocol_shares(OCPP201), 3) == [OCPP201] * 3


def test_protocol_is_a_flag_over_an_environment_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert parse([], environ={}).protocols[:2] == ["ocpp1.6", "ocpp1.6"]
    env = {"OCPP_SIM_PROTOCOL": OCPP201, "OCPP_SIM_CHARGERS": "2"}
    assert parse([], environ=env).protocols == [OCPP201, OCPP201]
    assert parse(["--protocol", "ocpp1.6"], environ=env).protocols == ["ocpp1.6", "ocpp1.6"]
    with pytest.raises(SystemExit) as exited:
        parse(["--protocol", "ocpp1.6=0.5,ocpp2=0.5"], environ={})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid setting: protocol 'ocpp2' is not ocpp1.6 or ocpp2.0.1" in err


def test_the_summary_tells_each_versions_part() -> None:
    stats = Stats.of(["ocpp1.6", OCPP201, "ocpp1.6"])
    stats.tally("ocpp1.6").reached = 2
    stats.tally(OCPP201).reached = 1
    stats.tally("ocpp1.6").sessions = 4
    stats.tally(OCPP201).sessions = 2
    stats.tally(OCPP201).remote_sessions = 1
    summary = stats.summary()
    assert (summary["chargers"], summary["connected"]) == (3, 3)
    assert (summary["sessions_completed"], summary["remote_sessions"]) == (6, 1)
    assert summary["by_protocol"][OCPP201] == {
        "chargers": 1, "connected": 1, "sessions_completed": 2, "remote_sessions": 1,
        "messages_sent": 0,
    }  # fmt: skip
    text = render(summary)
    assert "chargers            3/3 connected  (ocpp1.6 2/2, ocpp2.0.1 1/1)" in text
    assert "sessions completed  6 (1 remote-started)  (ocpp1.6 4, ocpp2.0.1 2)" in text
