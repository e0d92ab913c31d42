"""``python -m adapters.cli`` as a subprocess against a real Redis and, for
history, a real PostgreSQL: its JSON (and CSV) output and exit codes (0 done,
1 not found, 2 invalid input, 3 Redis or PostgreSQL down, or no
DATABASE_URL for history)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import pytest
import redis as redis_sync

from adapters.devstack import PostgresServer, Service, free_port, wait_for
from processor import instances, keys
from processor.instances import Instance
from tests.adapters.history import seed_history
from tests.adapters.test_api import CP, charger_receives, seed
from tests.messages import call


def cli(
    url: str | None, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    if url is not None:
        environ["REDIS_URL"] = url
    return subprocess.run([sys.executable, "-m", "adapters.cli", *args], capture_output=True,
                          text=True, env={**environ, **(env or {})}, input=stdin,
                          timeout=60)  # fmt: skip


def ok(url: str, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None) -> Any:
    done = cli(url, *args, stdin=stdin, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def fails(url: str | None, code: int, *args: str, says: str = "") -> None:
    done = cli(url, *args)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert says in done.stderr


@pytest.fixture
def r(redis_db: str) -> Iterator[redis_sync.Redis]:
    seed(redis_db)
    client = redis_sync.Redis.from_url(redis_db)
    yield client
    client.close()


def test_charge_points(redis_db: str, r: redis_sync.Redis) -> None:
    listed = ok(redis_db, "charge-points")
    assert [c["charge_point_id"] for c in listed["charge_points"]] == [CP, "CP2"]
    cp = ok(redis_db, "charge-point", CP)
    assert cp["charge_point_vendor"] == "Acme"
    assert cp["connectors"][1]["transaction_id"] == 3
    assert cp["configuration"][0]["key"] == "HeartbeatInterval"
    fails(redis_db, 1, "charge-point", "NOPE", says="not found")


@pytest.fixture
def pg(postgres_db: str) -> str:
    """A history database holding the rows of ``tests/adapters/history.py``."""
    seed_history(postgres_db)
    return postgres_db


def test_transactions(redis_db: str, r: redis_sync.Redis, pg: str) -> None:
    def ids(*args: str) -> list[int]:
        found = ok(redis_db, "--database-url", pg, "transactions", *args)
        return [t["transaction_id"] for t in found["transactions"]]

    assert ids() == [3, 2, 1]
    assert ids("--active") == [3]
    assert ids("--finished") == [2, 1]
    assert ids("--charge-point", CP) == [3, 1]
    assert ids("--id-tag", "TAG2") == [2]
    assert ids("--started-from", "2024-01-02T10:00:00Z", "--started-to", "2024-01-03T00:00Z") == [2]
    assert ids("--limit", "1", "--before", "3") == [2]
    # DATABASE_URL from the environment, as the API reads it.
    txn = ok(redis_db, "transaction", "3", env={"DATABASE_URL": pg})
    assert txn["active"] is True and txn["archived"] is True
    assert [v["value"] for v in txn["meter_values"]] == ["200", "7.2", "300"]
    # Not archived yet: Redis's record, as the API falls back to it.
    r.hset(keys.transaction(4), mapping={"charge_point_id": CP, "id_tag": "TAG4"})
    live = ok(redis_db, "transaction", "4", env={"DATABASE_URL": pg})
    assert live["archived"] is False and live["id_tag"] == "TAG4" and live["meter_values"] == []

    fails(redis_db, 1, "--database-url", pg, "transaction", "99", says="transaction 99")
    fails(redis_db, 2, "transaction", "three", says="invalid int")
    fails(redis_db, 2, "--database-url", pg, "transactions", "--limit", "0", says="limit")
    fails(redis_db, 2, "transactions", "--active", "--finished")
    fails(redis_db, 2, "transactions", "--started-from", "soon", says="RFC 3339")
    fails(redis_db, 2, "--database-url", pg, "transactions", "--started-to", "2024-01-01T00:00",
          says="time zone")  # fmt: skip


def test_transactions_as_csv(redis_db: str, pg: str) -> None:
    done = cli(redis_db, "--database-url", pg, "transactions", "--csv", "--limit", "2")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["transaction_id"], r["energy_wh"], r["energy_kwh"]) for r in rows] == [
        ("3", "", ""), ("2", "2500", "2.500")
    ]  # fmt: skip
    assert rows[1]["stop_id_tag"] == "'=1+2"  # not a formula in a spreadsheet
    assert "--before 2" in done.stderr  # where the next page starts
    done = cli(redis_db, "--database-url", pg, "transactions", "--csv", "--before", "2")
    assert done.returncode == 0 and done.stderr == ""
    assert [r["transaction_id"] for r in csv.DictReader(io.StringIO(done.stdout))] == ["1"]


def test_v201_transactions(redis_db: str, r: redis_sync.Redis, pg: str) -> None:
    def keys_of(*args: str) -> list[tuple[str, str]]:
        found = ok(redis_db, "--database-url", pg, "v201-transactions", *args)
        return [(t["charge_point_id"], t["transaction_id"]) for t in found["transactions"]]

    assert keys_of("--finished") == [("CP201", "tx-a")]
    assert keys_of("--charge-point", "CP202", "--id-token", "TOK1") == [("CP202", "tx-a")]
    done = cli(redis_db, "--database-url", pg, "v201-transactions", "--limit", "1", "--csv")
    assert done.returncode == 0, done.stderr
    assert [r["transaction_id"] for r in csv.DictReader(io.StringIO(done.stdout))] == ["tx-a"]
    cursor = done.stderr.split("--before ")[1].strip()
    assert keys_of("--limit", "1", "--before", cursor) == [("CP201", "tx-b")]
    session = ok(redis_db, "--database-url", pg, "v201-transaction", "CP201", "tx-a")
    assert session["energy_wh"] == 7500 and len(session["events"]) == 3
    fails(redis_db, 1, "--database-url", pg, "v201-transaction", "CP201", "nope", says="nope")
    fails(redis_db, 2, "--database-url", pg, "v201-transactions", "--before", "x", says="cursor")


def test_events_and_commands(redis_db: str, pg: str) -> None:
    events = ok(redis_db, "--database-url", pg, "events", CP, "--limit", "3")
    assert [e["kind"] for e in events["events"]] == ["status", "status", "status"]
    rest = ok(redis_db, "--database-url", pg, "events", CP, "--before", events["next_before"])
    assert [e["kind"] for e in rest["events"]] == ["boot"] and rest["next_before"] is None
    assert rest["events"][0]["details"] == {"chargePointVendor": "Acme",
                                             "chargePointModel": "Fast"}  # fmt: skip
    found = ok(redis_db, "--database-url", pg, "events", CP, "--kind", "status", "--from",
               "2024-01-01T09:05:00Z")  # fmt: skip
    assert [e["connector_id"] for e in found["events"]] == [0, 1]
    fails(redis_db, 2, "--database-url", pg, "events", CP, "--before", "x", says="before")

    commands = ok(redis_db, "--database-url", pg, "commands", CP)
    assert [c["command_id"] for c in commands["commands"]] == ["c-3", "c-2", "c-1"]
    # Redis has no c-1: the history's.
    command = ok(redis_db, "--database-url", pg, "command", "c-1")
    assert command["state"] == "answered" and command["round_trip_ms"] == 250
    fails(redis_db, 1, "command", "c-1", says="c-1")  # no history to look in


def test_history_unavailable(redis_db: str, private_postgres: PostgresServer) -> None:
    for args in (("transactions",), ("transaction", "1"), ("events", CP), ("commands", CP)):
        fails(redis_db, 3, *args, says="history unavailable: history needs DATABASE_URL")
    url = private_postgres.url.replace("postgres@", "postgres:pg-Secret-42@")
    private_postgres.stop()
    done = cli(redis_db, "--database-url", url, "transactions")
    assert done.returncode == 3 and done.stdout == ""
    assert f"history database postgresql://postgres:***@127.0.0.1:{private_postgres.port}" in (
        done.stderr
    )
    assert "pg-Secret-42" not in done.stderr and len(done.stderr.splitlines()) == 1
    fails(redis_db, 2, "--database-url", "postgresql://u:p/w#@h/db", "transactions",
          says="DATABASE_URL is not a valid")  # fmt: skip
    # Commands that do not read history never look at it.
    assert ok(redis_db, "--database-url", "nonsense", "charge-points") == {"charge_points": []}


def test_id_tags(redis_db: str, r: redis_sync.Redis) -> None:
    entry = ok(redis_db, "id-tag", "put", "TAG9", "Accepted", "--expiry-date",
               "2030-01-01T00:00:00Z", "--parent", "PARENT")  # fmt: skip
    assert entry == {"id_tag": "TAG9", "status": "Accepted",
                     "expiry_date": "2030-01-01T00:00:00.000Z", "parent_id_tag": "PARENT",
                     "active_transaction_id": None}  # fmt: skip
    assert r.hgetall(keys.id_tag("TAG9")) == {
        b"status": b"Accepted", b"parent_id_tag": b"PARENT",
        b"expiry_date": b"2030-01-01T00:00:00.000Z",
    }  # fmt: skip
    assert ok(redis_db, "id-tag", "get", "TAG9") == entry
    assert ok(redis_db, "id-tag", "get", "TAG1")["active_transaction_id"] == 3
    assert ok(redis_db, "id-tag", "put", "TAG9", "Blocked")["expiry_date"] is None
    assert ok(redis_db, "id-tag", "delete", "TAG9") == {"id_tag": "TAG9", "deleted": True}
    fails(redis_db, 1, "id-tag", "get", "TAG9", says="TAG9")
    fails(redis_db, 1, "id-tag", "delete", "TAG9", says="TAG9")
    fails(redis_db, 2, "id-tag", "put", "X" * 21, "Accepted", says="1 to 20 characters")
    fails(redis_db, 2, "id-tag", "put", "TAG9", "Maybe", says="Maybe")
    fails(redis_db, 2, "id-tag", "put", "TAG9", "Accepted", "--expiry-date", "2030-01-01T00:00:00",
          says="timezone")  # fmt: skip
    fails(redis_db, 2, "id-tag", "put", "TAG9", "Accepted", "--parent", "P" * 21, says="20")
    fails(redis_db, 2, "id-tag", "get", "X" * 21, says="1 to 20 characters")
    assert not r.exists(keys.id_tag("TAG9"))


def test_send_and_look_up_a_command(redis_db: str, r: redis_sync.Redis) -> None:
    sent = ok(redis_db, "send", CP, "Reset", '{"type": "Soft"}', "--timeout", "5")
    assert sent["state"] == "sent" and sent["request"] == {"type": "Soft"}
    assert sent["timeout_ms"] == 5000
    [raw] = r.lrange(keys.responses(CP), 0, -1)
    assert json.loads(raw)["payload"] == [2, sent["command_id"], "Reset", {"type": "Soft"}]
    assert ok(redis_db, "command", sent["command_id"]) == sent
    # From stdin; the default payload is {}.
    queued = ok(redis_db, "send", CP, "UnlockConnector", "-", stdin='{"connectorId": 1}')
    assert queued["state"] == "queued"
    assert ok(redis_db, "send", CP, "ClearCache")["request"] == {}

    fails(redis_db, 1, "command", "nope", says="nope")
    fails(redis_db, 1, "send", "NOPE", "ClearCache", says="NOPE")
    fails(redis_db, 2, "send", CP, "Heartbeat", says="not a command")
    fails(redis_db, 2, "send", CP, "Reset", '{"type": "Hardest"}', says="$.type")
    fails(redis_db, 2, "send", CP, "Reset", "{not json", says="not valid JSON")
    fails(redis_db, 2, "send", CP, "Reset", '{"type": "Soft"}', "--wait", "61", says="wait")
    fails(redis_db, 2, "send", CP, "Reset", '{"type": "Soft"}', "--timeout", "0", says="timeout")
    # Deep, huge and broken input: refused as invalid, never a traceback.
    fails(redis_db, 2, "send", CP, "Reset", "[" * 5000 + "]" * 5000, says="nests deeper than 64")
    fails(redis_db, 2, "send", CP, "Reset", '{"type": "\udcff"}', says="UTF-8")
    fails(redis_db, 2, "send", "CP\udcff", "ClearCache", says="not valid UTF-8")
    fails(redis_db, 2, "id-tag", "put", "T\udcff", "Accepted", says="not valid UTF-8")
    big = cli(redis_db, "send", CP, "Reset", "-", stdin='{"type": "Soft"}' + " " * (1 << 20))
    assert big.returncode == 2 and "over 1048576 bytes" in big.stderr, big.stderr
    assert r.llen(keys.command_queue(CP)) == 2  # the invalid ones sent nothing


def test_send_waits_for_the_chargers_answer(redis_db: str) -> None:
    """With a real adapter and processor: the reply completes the command."""
    services = [Service("adapters", redis_db),
                Service("processor", redis_db, env={"OCPP_READ_BLOCK_MS": "200"})]  # fmt: skip
    r = redis_sync.Redis.from_url(redis_db)
    try:
        boot = {"chargePointVendor": "V", "chargePointModel": "M"}
        r.lpush(keys.REQUESTS, call(CP, "b1", "BootNotification", boot))
        charger_receives(r)
        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(
                cli, redis_db, "send", CP, "TriggerMessage", '{"requestedMessage": "Heartbeat"}',
                "--wait", "20",
            )  # fmt: skip
            sent = charger_receives(r, timeout=30)
            mid = sent["message_id"]
            r.lpush(keys.REQUESTS, json.dumps({
                "charge_point_id": CP, "message_type": 3, "message_id": mid,
                "payload": [3, mid, {"status": "Accepted"}],
                "timestamp": "2024-01-01T12:00:01Z"}))  # fmt: skip
            result = done.result(timeout=60)
        assert result.returncode == 0, result.stderr
        command = json.loads(result.stdout)
        assert command["command_id"] == mid and command["state"] == "answered"
        assert command["status"] == "Accepted" and command["result"] == {"status": "Accepted"}
    finally:
        r.close()
        codes = [s.terminate() for s in reversed(services)]
    assert codes == [0, 0]


def test_redis_unavailable_and_usage_errors() -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    # Why, not only what (redis-py 8's repr() of its errors says neither).
    fails(down, 3, "charge-points", says="redis unavailable: ConnectionError: Error 111")
    fails(None, 3, "--redis-url", down, "charge-points", says="redis unavailable")
    fails(down, 2, "no-such-command")
    fails(down, 2, "send", CP)  # no action
    done = cli(down, "--help")
    assert done.returncode == 0 and "exit codes" in done.stdout


def test_health_checks_redis_and_the_group(redis_db: str, r: redis_sync.Redis) -> None:
    assert ok(redis_db, "health") == {"redis": "ok", "group": "not checked"}
    fails(redis_db, 1, "health", "--group", says="consumer group processors")
    r.xgroup_create("ocpp:inbound", "processors", id="0", mkstream=True)
    assert ok(redis_db, "health", "--group") == {"redis": "ok", "group": "ok"}
    fails("redis://127.0.0.1:1/0", 3, "health")


def test_instances_lists_the_live_ones(redis_db: str) -> None:
    assert ok(redis_db, "instances") == {"instances": []}
    now = instances.now_ms()
    alive = Instance(service="processor", host="node-1", pid=7, consumer="node-1-7",
                     health_url="http://node-1:41234", started_ms=now - 60_000,
                     last_seen_ms=now - 2_000)  # fmt: skip
    killed = msgspec.structs.replace(alive, pid=8, last_seen_ms=now - instances.STALE_AFTER_MS - 1)
    with redis_sync.Redis.from_url(redis_db) as r:
        r.hset(keys.INSTANCES, alive.field, instances.encode(alive))
        r.hset(keys.INSTANCES, killed.field, instances.encode(killed))
        [shown] = ok(redis_db, "instances")["instances"]
        assert r.hlen(keys.INSTANCES) == 2  # pruning is the services' job
    ago = shown.pop("last_seen_s_ago")
    assert shown == {"service": "processor", "host": "node-1", "pid": 7,
                     "consumer": "node-1-7", "health_url": "http://node-1:41234"}  # fmt: skip
    assert 2.0 <= ago < 30


def test_probe_answers_as_a_container_health_check(
    redis_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0 on 2xx, 1 on anything else, the body on stdout either way."""
    down = f"redis://127.0.0.1:{free_port()}/0"
    services = [Service("adapters", url, health_port=free_port()) for url in (redis_db, down)]
    up, stuck = (f"http://127.0.0.1:{s.health_port}" for s in services)
    try:
        wait_for(lambda: cli(None, "probe", f"{up}/readyz").returncode == 0, 30, "readiness")
        done = cli(None, "probe", f"{up}/readyz")
        assert json.loads(done.stdout) == {"ready": True} and done.stderr == ""
        assert cli(None, "probe", f"{stuck}/livez").returncode == 0
        done = cli(None, "probe", f"{stuck}/readyz")
        assert done.returncode == 1 and "HTTP 503" in done.stderr
        assert json.loads(done.stdout)["reason"].startswith("redis unreachable")
        assert cli(None, "probe", f"{up}/nope").returncode == 1
        # A proxy in the environment (one that is not even there) is not asked.
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
        assert cli(None, "probe", f"{up}/readyz").returncode == 0
    finally:
        codes = [s.terminate() for s in services]
    assert codes == [0, 0]
    done = cli(None, "probe", f"{up}/livez", "--timeout", "1")
    assert done.returncode == 1 and "Connection refused" in done.stderr
    done = cli(None, "probe", "127.0.0.1:9101/readyz")
    assert done.returncode == 1 and "not an http(s) URL" in done.stderr
