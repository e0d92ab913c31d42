"""History end to end through the real services: adapter, processor and
``ocpp-archiver run`` on a real Redis and a real PostgreSQL; then SIGKILL
the archiver mid-batch, and PostgreSQL under load, and count every row."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis

from adapters.archiver.migrate import available
from adapters.devstack import PostgresServer, Service, free_port, listening, wait_for
from processor import keys
from tests.integration.helpers import collect, push
from tests.messages import call

pytestmark = pytest.mark.slow

CPS = [f"CP{i:02d}" for i in range(20)]


def query(url: str, sql: str, *args: Any) -> list[Any]:
    async def run() -> list[Any]:
        connection = await asyncpg.connect(url)
        try:
            return list(await connection.fetch(sql, *args))
        finally:
            await connection.close()

    return asyncio.run(run())


def count(url: str, table: str) -> int:
    try:
        return int(query(url, f"SELECT count(*) FROM {table}")[0][0])
    except (OSError, asyncpg.PostgresError):
        return -1  # not migrated yet, or the server is down


# A row per meterValue; a sample a row, as the API reads them.
SAMPLES = """(SELECT m.*, s->>'measurand' AS measurand, s->>'phase' AS phase,
    s->>'value' AS value, s->>'unit' AS unit, n FROM meter_values m,
    json_array_elements(m.sampled_values) WITH ORDINALITY AS e(s, n)) AS samples"""


def meter_values(cp: str, mid: str, n: int, transaction_id: int | None = None) -> bytes:
    ts = f"2024-01-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
    body: dict[str, Any] = {"connectorId": 1, "meterValue": [{"timestamp": ts, "sampledValue": [
        {"value": str(1000 + n), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": "7200", "measurand": "Power.Active.Import", "unit": "W"},
        {"value": "31.5", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
    ]}]}  # fmt: skip
    if transaction_id is not None:
        body["transactionId"] = transaction_id
    return call(cp, mid, "MeterValues", body)


def archiver(redis_url: str, database_url: str, name: str = "archiver", **env: str) -> Service:
    return Service(
        "adapters.archiver",
        redis_url,
        args=["run"],
        env={"DATABASE_URL": database_url, "OCPP_MIGRATE": "true", "OCPP_CONSUMER_NAME": name,
             **env},
    )  # fmt: skip


def stop_all(*services: Service) -> None:
    for s in services:
        if s.alive():
            s.kill()


def test_a_session_reaches_postgresql(redis_db: str, postgres_db: str, client: redis.Redis) -> None:
    cp = "CP-HIST"
    boot = {"chargePointVendor": "Acme", "chargePointModel": "X1"}
    status = {"connectorId": 1, "errorCode": "NoError", "status": "Charging",
              "timestamp": "2024-01-01T10:00:00Z"}  # fmt: skip
    start = {"connectorId": 1, "idTag": "TAG1", "meterStart": 1000,
             "timestamp": "2024-01-01T10:00:01Z"}  # fmt: skip
    security = {"type": "FirmwareUpdated", "timestamp": "2024-01-01T10:00:02Z"}
    adapter = Service("adapters", redis_db)
    processor = Service("processor", redis_db)
    archive = archiver(redis_db, postgres_db)
    try:
        push(client, call(cp, "b", "BootNotification", boot),
             call(cp, "s", "StatusNotification", status),
             call(cp, "t", "StartTransaction", start),
             call(cp, "x", "SecurityEventNotification", security),
             b"{not json")  # fmt: skip
        replies = collect(client, [cp], 4, timeout=30)
        [tid] = [r["payload"][2]["transactionId"] for r in replies if r["message_id"] == "t"]
        push(client, meter_values(cp, "m1", 1, tid), meter_values(cp, "m2", 2, tid),
             call(cp, "e", "StopTransaction", {"transactionId": tid, "meterStop": 1600,
                                                "timestamp": "2024-01-01T11:00:00Z",
                                                "reason": "EVDisconnected"}))  # fmt: skip
        collect(client, [cp], 3, timeout=30)
        wait_for(
            lambda: count(postgres_db, "transactions WHERE stopped_at IS NOT NULL") == 1,
            30, "the stopped transaction in PostgreSQL",
        )  # fmt: skip
        wait_for(lambda: count(postgres_db, "dead_letters") == 1, 30, "the dead letter")
        # Below the processors' CPU priority by default: history can wait.
        assert os.getpriority(os.PRIO_PROCESS, archive.pid) == (
            os.getpriority(os.PRIO_PROCESS, processor.pid) + 10)  # fmt: skip
        wait_for(lambda: client.xpending(keys.HISTORY, keys.ARCHIVERS)["pending"] == 0, 10, "acks")
        assert archive.terminate() == 0
    finally:
        stop_all(adapter, processor, archive)
    [txn] = query(postgres_db, "SELECT * FROM transactions")
    assert (txn["charge_point_id"], txn["transaction_id"], txn["id_tag"]) == (cp, tid, "TAG1")
    assert (txn["meter_start"], txn["meter_stop"], txn["energy_wh"]) == (1000, 1600, 600)
    assert (txn["stop_reason"], txn["id_tag_status"]) == ("EVDisconnected", "Accepted")
    samples = query(postgres_db, "SELECT measurand, phase, value, unit, transaction_id "
                                 f"FROM {SAMPLES} ORDER BY sampled_at, seq, n")  # fmt: skip
    assert [tuple(s) for s in samples[:3]] == [
        ("Energy.Active.Import.Register", None, "1001", "Wh", tid),
        ("Power.Active.Import", None, "7200", "W", tid),
        ("Current.Import", "L1", "31.5", "A", tid),
    ]
    assert len(samples) == 6
    events = query(postgres_db, "SELECT kind, connector_id, details FROM charger_events "
                                "ORDER BY occurred_at")  # fmt: skip
    assert [e["kind"] for e in events] == [
        "StatusNotification", "SecurityEventNotification", "BootNotification"]  # fmt: skip
    assert json.loads(events[0]["details"])["status"] == "Charging"
    [dead] = query(postgres_db, "SELECT reason, envelope FROM dead_letters")
    assert dead["envelope"] == b"{not json"
    # Nothing per sample stays in Redis.
    assert not client.keys("ocpp:*:meter")

    # Redis loses everything: the closed session and its samples are still
    # served, from PostgreSQL, by a real ocpp-api through a real HTTP client.
    client.flushall()
    port = free_port()
    api = Service("adapters.api", redis_db, env={"OCPP_API_HOST": "127.0.0.1",
                  "OCPP_API_PORT": str(port), "DATABASE_URL": postgres_db})  # fmt: skip
    try:
        wait_for(lambda: listening(port), 30, "the API to listen")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            detail = http.get(f"/v1/transactions/{tid}")
            assert detail.status_code == 200, detail.text
            body = detail.json()
            assert (body["archived"], body["energy_wh"], body["stop_reason"]) == (
                True, 600, "EVDisconnected")  # fmt: skip
            assert [(v["measurand"], v["value"]) for v in body["meter_values"]][:3] == [
                ("Energy.Active.Import.Register", "1001"), ("Power.Active.Import", "7200"),
                ("Current.Import", "31.5")]  # fmt: skip
            listed = http.get("/v1/transactions", params={"charge_point_id": cp}).json()
            assert [t["transaction_id"] for t in listed["transactions"]] == [tid]
            events = http.get(f"/v1/charge-points/{cp}/events").json()
            assert {e["kind"] for e in events["events"]} >= {"BootNotification",
                                                              "StatusNotification"}  # fmt: skip
        assert api.terminate() == 0
    finally:
        stop_all(api)


def test_killed_archiver_writes_every_row_exactly_once(
    redis_db: str, postgres_db: str, client: redis.Redis
) -> None:
    n = 6000
    push(client, *[meter_values(CPS[i % len(CPS)], f"m{i}", i) for i in range(n)])
    adapter = Service("adapters", redis_db)
    # Small commits, so the history stream holds many entries to kill among.
    processor = Service("processor", redis_db, env={"OCPP_BATCH_SIZE": "8"})
    fast = {"OCPP_CLAIM_IDLE_MS": "300", "OCPP_ARCHIVER_BATCH": "2"}
    archivers: list[Service] = []
    kills = 0
    try:
        collect(client, CPS, n, timeout=60)
        # Each archiver in turn is frozen when caught holding entries it has
        # not acknowledged (reading them, writing them, or between the
        # commit and the XACK) and killed; the next claims what it left.
        for k in range(4):
            name = f"victim{k}"
            victim = archiver(redis_db, postgres_db, name, **fast)
            archivers.append(victim)

            def caught(victim: Service = victim, name: str = name) -> bool:
                os.kill(victim.pid, signal.SIGSTOP)
                groups = client.xinfo_groups(keys.HISTORY)
                if groups and any(
                    c["name"] == name.encode() and c["pending"] > 0
                    for c in client.xinfo_consumers(keys.HISTORY, keys.ARCHIVERS)
                ):
                    return True
                os.kill(victim.pid, signal.SIGCONT)
                return False  # fmt: skip

            wait_for(caught, 30, f"{name} to hold entries", interval=0.001)
            victim.kill()
            kills += 1
        survivor = archiver(redis_db, postgres_db, "survivor", **fast)
        archivers.append(survivor)
        wait_for(lambda: count(postgres_db, "meter_values") >= n, 60, "every meter value")
        wait_for(lambda: client.xpending(keys.HISTORY, keys.ARCHIVERS)["pending"] == 0, 30, "acks")
        assert survivor.terminate() == 0
    finally:
        stop_all(adapter, processor, *archivers)
    assert kills == 4
    assert count(postgres_db, "meter_values") == n
    assert count(postgres_db, SAMPLES) == 3 * n
    # Each message's energy register is its own: n of them, each once.
    [row] = query(postgres_db, f"SELECT count(*), count(DISTINCT value) FROM {SAMPLES} "
                               "WHERE measurand = 'Energy.Active.Import.Register'")  # fmt: skip
    assert tuple(row) == (n, n)


def readiness(port: int) -> tuple[int, str]:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    except httpx.HTTPError:
        return 0, ""
    return r.status_code, r.text


def test_postgresql_down_under_load_loses_and_doubles_nothing(
    redis_db: str, client: redis.Redis, private_postgres: PostgresServer, tmp_path: Path
) -> None:
    url = private_postgres.url
    adapter = Service("adapters", redis_db)
    processor = Service("processor", redis_db)
    health = free_port()
    with (tmp_path / "archiver.log").open("wb") as log:
        archive = Service("adapters.archiver", redis_db, args=["run"], log=log, health_port=health,
                          env={"DATABASE_URL": url, "OCPP_MIGRATE": "true"})  # fmt: skip
    n = 3000
    try:
        push(client, *[meter_values(CPS[i % len(CPS)], f"a{i}", i) for i in range(n)])
        collect(client, CPS, n, timeout=60)
        wait_for(lambda: count(url, "meter_values") > 0, 30, "archiving to start")
        assert readiness(health)[0] == 200
        private_postgres.kill()  # a crash, in the middle of the archiver's writes
        # Chargers keep being answered while the database is down.
        push(client, *[meter_values(CPS[i % len(CPS)], f"b{i}", n + i) for i in range(n)])
        collect(client, CPS, n, timeout=60)
        wait_for(lambda: client.xinfo_groups(keys.HISTORY)[0]["lag"] > 0
                 or client.xpending(keys.HISTORY, keys.ARCHIVERS)["pending"] > 0,
                 10, "history to wait in the stream")  # fmt: skip
        # The archiver says so: not ready, with the reason, and in its log.
        wait_for(lambda: readiness(health)[0] == 503, 10, "the archiver to turn not ready")
        assert "postgresql unavailable" in readiness(health)[1]
        private_postgres.start()
        wait_for(lambda: count(url, "meter_values") >= 2 * n, 60, "the backlog to drain")
        wait_for(lambda: client.xpending(keys.HISTORY, keys.ARCHIVERS)["pending"] == 0, 30, "acks")
        wait_for(lambda: readiness(health)[0] == 200, 10, "the archiver ready again")
        assert archive.terminate() == 0
    finally:
        stop_all(adapter, processor, archive)
    assert count(url, "meter_values") == 2 * n
    assert count(url, SAMPLES) == 6 * n
    lines = (tmp_path / "archiver.log").read_text()
    # Once when it went, once when it came back: not a line per retry.
    assert lines.count("postgresql unavailable, history waits in ocpp:history") == 1
    assert lines.count("postgresql reachable again after") == 1


def status(cp: str, mid: str, n: int) -> bytes:
    ts = f"2024-01-01T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
    body = {"connectorId": 1, "errorCode": "NoError", "status": "Charging", "timestamp": ts}
    return call(cp, mid, "StatusNotification", body)


class HeldLock:
    """A PostgreSQL session holding ``LOCK TABLE`` in an open transaction
    until released, from a thread of its own, so a synchronous test can kill
    processes while the lock is held."""

    def __init__(self, url: str, table: str) -> None:
        self._release = threading.Event()
        self._held = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._hold(url, table),))
        self._thread.start()
        if not self._held.wait(10):
            self._release.set()
            raise TimeoutError(f"no lock on {table}: {self._error!r}")

    async def _hold(self, url: str, table: str) -> None:
        try:
            connection = await asyncpg.connect(url)
            try:
                async with connection.transaction():
                    await connection.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                    self._held.set()
                    # Released by the test, or at the latest when its own
                    # deadlines (90 s at most) have all passed.
                    await asyncio.to_thread(self._release.wait, 300)
            finally:
                await connection.close()
        except BaseException as exc:  # reported by __init__ or release()
            self._error = exc

    def release(self) -> None:
        self._release.set()
        self._thread.join(10)
        assert not self._thread.is_alive() and self._error is None, self._error


@pytest.mark.parametrize("locked", ["meter_values", "charger_events"])
def test_archiver_killed_mid_statement_writes_every_row_exactly_once(
    redis_db: str, postgres_db: str, client: redis.Redis, locked: str
) -> None:
    """The archiver writes a batch as one INSERT ... SELECT FROM unnest() per
    table in one transaction (our COPY). Kill it while PostgreSQL is executing
    one of them: the first (nothing else written yet), or charger_events,
    after the batch's meter values are inserted in the same transaction."""
    n = 1000
    # Interleaved, so that every history batch holds rows for both tables.
    traffic = [m(CPS[i % len(CPS)], f"{m.__name__}{i}", i) for i in range(n)
               for m in (meter_values, status)]  # fmt: skip
    victim = archiver(redis_db, postgres_db, "victim", OCPP_CLAIM_IDLE_MS="300")
    services = [victim]
    try:
        # Every migration applied (each in a transaction of its own, some on
        # the locked table): else the lock would stop a migration, not the insert.
        migrations = len(available())
        wait_for(lambda: count(postgres_db, "schema_migrations") == migrations, 30,
                 "the migrated schema")  # fmt: skip
        lock = HeldLock(postgres_db, locked)
        try:
            services += [Service("adapters", redis_db), Service("processor", redis_db)]
            push(client, *traffic)
            collect(client, CPS, 2 * n, timeout=60)
            # The victim's backend, inside its INSERT into the locked table.
            blocked = f"""SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                AND query LIKE '%INSERT INTO {locked} (%'"""
            wait_for(lambda: query(postgres_db, blocked), 30, f"an INSERT INTO {locked}")
            [[backend]] = query(postgres_db, blocked)
            # Rows already inserted in the same transaction hold their lock.
            holds = query(postgres_db, """SELECT DISTINCT c.relname FROM pg_locks l
                JOIN pg_class c ON c.oid = l.relation WHERE l.pid = $1 AND l.granted
                AND l.mode = 'RowExclusiveLock'""", backend)  # fmt: skip
            if locked == "charger_events":
                assert any(h["relname"].startswith("meter_values") for h in holds), holds
            victim.kill()
        finally:
            lock.release()
        # Its statement now runs to its end, finds its client gone and rolls
        # back: nothing of the batch was committed.
        wait_for(lambda: not query(postgres_db, "SELECT 1 FROM pg_stat_activity WHERE pid = $1",
                                   backend), 30, "the victim's backend to end")  # fmt: skip
        assert count(postgres_db, "meter_values") + count(postgres_db, "charger_events") == 0
        survivor = archiver(redis_db, postgres_db, "survivor", OCPP_CLAIM_IDLE_MS="300")
        services.append(survivor)
        wait_for(lambda: count(postgres_db, "charger_events") >= n, 60, "every event")
        wait_for(lambda: client.xpending(keys.HISTORY, keys.ARCHIVERS)["pending"] == 0, 30, "acks")
        assert survivor.terminate() == 0
    finally:
        stop_all(*services)
    assert count(postgres_db, "meter_values") == n
    assert count(postgres_db, "charger_events") == n
    [row] = query(postgres_db, f"SELECT count(*), count(DISTINCT value) FROM {SAMPLES} "
                               "WHERE measurand = 'Energy.Active.Import.Register'")  # fmt: skip
    assert tuple(row) == (n, n)
