"""The API's history routes on a real PostgreSQL and a real Redis, through
an HTTP client: transactions (filters, paging, CSV), a transaction's meter
values, charger events and commands, read from the tables ocpp-archiver
writes (rows inserted straight into them here), and what happens without
a database or while it is down."""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import redis as redis_sync
from litestar.testing import AsyncTestClient

from adapters.api import ApiSettings, create_app
from adapters.devstack import PostgresServer, wait_until
from processor import keys
from tests.adapters.history import CP, write_history
from tests.adapters.test_api import assert_problem, seed

pytestmark = pytest.mark.anyio

Client = AsyncTestClient[Any]


@pytest.fixture
async def client(redis_db: str, postgres_db: str) -> AsyncIterator[Client]:
    """The API on a Redis seeded as the processor writes it and a history
    database holding the rows of ``tests/adapters/history.py``."""
    seed(redis_db)
    await write_history(postgres_db)
    app = create_app(ApiSettings(redis_url=redis_db, database_url=postgres_db))
    async with AsyncTestClient(app=app) as c:
        yield c


async def page(client: Client, query: str) -> tuple[list[int], int | None]:
    resp = await client.get(f"/v1/transactions{query}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    return [t["transaction_id"] for t in body["transactions"]], body["next_before"]


async def test_transactions_filtered_newest_first(client: Client) -> None:
    assert await page(client, "") == ([3, 2, 1], None)
    assert await page(client, "?active=true") == ([3], None)
    assert await page(client, "?active=false") == ([2, 1], None)
    assert await page(client, f"?charge_point_id={CP}") == ([3, 1], None)
    assert await page(client, "?charge_point_id=CP2&active=true") == ([], None)
    assert await page(client, "?id_tag=TAG1&active=false") == ([1], None)
    assert await page(client, "?charge_point_id=NOPE") == ([], None)
    # From inclusive, to exclusive; any offset, as RFC 3339 allows.
    assert await page(client, "?started_from=2024-01-02T10:00:00Z") == ([3, 2], None)
    assert await page(client, "?started_to=2024-01-02T10:00:00Z") == ([1], None)
    window = "?started_from=2024-01-02T11:00:00%2B01:00&started_to=2024-01-03T10:00:00.001Z"
    assert await page(client, window) == ([3, 2], None)

    listed = (await client.get("/v1/transactions")).json()["transactions"]
    assert listed[0] == {
        "transaction_id": 3, "charge_point_id": CP, "connector_id": 1, "id_tag": "TAG1",
        "active": True, "meter_start": 100, "start_timestamp": "2024-01-03T10:00:00.000000Z",
        "reservation_id": 7, "id_tag_status": "Accepted", "meter_stop": None,
        "stop_timestamp": None, "stop_reason": None, "stop_id_tag": None, "energy_wh": None,
    }  # fmt: skip
    assert listed[1]["energy_wh"] == 2500 and listed[1]["stop_reason"] == "Remote"
    assert listed[1]["stop_timestamp"] == "2024-01-02T11:00:00.000000Z"

    assert_problem(await client.get("/v1/transactions?limit=0"), 400, "limit")
    assert_problem(await client.get("/v1/transactions?limit=1001"), 400, "limit")
    assert_problem(await client.get("/v1/transactions?active=maybe"), 400, "active")
    assert_problem(await client.get("/v1/transactions?before=x"), 400, "before")
    assert_problem(await client.get("/v1/transactions?started_from=soon"), 400, "started_from")
    naive = await client.get("/v1/transactions?started_to=2024-01-01T00:00:00")
    assert_problem(naive, 400, "started_to", "time zone")


async def test_transactions_page_by_id(client: Client) -> None:
    first = await client.get("/v1/transactions?limit=2&charge_point_id=CP1&active=false")
    assert first.json()["next_before"] is None and "link" not in first.headers
    assert await page(client, "?limit=2") == ([3, 2], 2)
    assert await page(client, "?limit=2&before=2") == ([1], None)
    assert await page(client, "?limit=1&before=3") == ([2], 2)
    assert await page(client, "?limit=3") == ([3, 2, 1], None)  # no more: no cursor
    # The Link header repeats the query with the next cursor.
    resp = await client.get("/v1/transactions?limit=1&id_tag=TAG1&before=99")
    link = resp.headers["link"]
    assert link == '</v1/transactions?limit=1&id_tag=TAG1&before=3>; rel="next"'
    following = await client.get(link[1 : link.index(">")])
    assert [t["transaction_id"] for t in following.json()["transactions"]] == [1]


async def test_transactions_as_csv(client: Client) -> None:
    resp = await client.get("/v1/transactions", headers={"accept": "text/csv"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert [r["transaction_id"] for r in rows] == ["3", "2", "1"]
    assert list(rows[0]) == [
        "transaction_id", "charge_point_id", "connector_id", "id_tag", "id_tag_status",
        "reservation_id", "active", "start_timestamp", "meter_start", "stop_timestamp",
        "meter_stop", "stop_reason", "stop_id_tag", "energy_wh", "energy_kwh",
    ]  # fmt: skip
    assert rows[1] == {
        "transaction_id": "2", "charge_point_id": "CP2", "connector_id": "1", "id_tag": "TAG2",
        "id_tag_status": "Accepted", "reservation_id": "", "active": "false",
        "start_timestamp": "2024-01-02T10:00:00.000000Z", "meter_start": "100",
        "stop_timestamp": "2024-01-02T11:00:00.000000Z", "meter_stop": "2600",
        "stop_reason": "Remote", "stop_id_tag": "'=1+2", "energy_wh": "2500",
        "energy_kwh": "2.500",
    }  # fmt: skip
    assert rows[0]["active"] == "true" and rows[0]["energy_kwh"] == ""
    assert rows[2]["energy_kwh"] == "1.000"

    # Filters and paging alike; JSON is the default.
    resp = await client.get("/v1/transactions?limit=1&charge_point_id=CP1",
                            headers={"accept": "text/csv"})  # fmt: skip
    assert [r["transaction_id"] for r in csv.DictReader(io.StringIO(resp.text))] == ["3"]
    assert (
        resp.headers["link"]
        == '</v1/transactions?limit=1&charge_point_id=CP1&before=3>; rel="next"'
    )
    for accept in ("*/*", "text/csv;q=0.5, application/json", "text/html"):
        resp = await client.get("/v1/transactions", headers={"accept": accept})
        assert resp.headers["content-type"].startswith("application/json"), accept
    empty = await client.get("/v1/transactions?id_tag=NONE", headers={"accept": "text/csv"})
    assert len(list(csv.reader(io.StringIO(empty.text)))) == 1  # the header alone


async def test_transaction_with_its_meter_values_in_time_order(client: Client) -> None:
    detail = (await client.get("/v1/transactions/3")).json()
    listed = (await client.get("/v1/transactions?limit=1")).json()["transactions"][0]
    values = detail.pop("meter_values")
    assert detail == {**listed, "archived": True, "meter_values_truncated": False}
    assert values == [
        {"sampled_at": "2024-01-03T10:01:00.000000Z", "connector_id": 1, "value": "200",
         "measurand": "Energy.Active.Import.Register", "phase": None, "location": "Outlet",
         "unit": "Wh", "context": "Sample.Periodic", "format": "Raw", "signed_meter_value": None},
        {"sampled_at": "2024-01-03T10:01:00.000000Z", "connector_id": 1, "value": "7.2",
         "measurand": "Power.Active.Import", "phase": "L1", "location": "Outlet", "unit": "kW",
         "context": "Sample.Periodic", "format": "Raw", "signed_meter_value": None},
        {"sampled_at": "2024-01-03T10:02:00.000000Z", "connector_id": 1, "value": "300",
         "measurand": "Energy.Active.Import.Register", "phase": None, "location": "Outlet",
         "unit": "Wh", "context": "Sample.Periodic", "format": "Raw", "signed_meter_value": None},
    ]  # fmt: skip
    finished = (await client.get("/v1/transactions/1")).json()
    assert finished["active"] is False and finished["energy_wh"] == 1000
    assert [(v["value"], v["measurand"]) for v in finished["meter_values"]] == [("150", None)]
    no_values = (await client.get("/v1/transactions/2")).json()
    assert no_values["meter_values"] == [] and no_values["stop_id_tag"] == "=1+2"


async def test_transaction_not_archived_yet_comes_from_redis(client: Client, redis_db: str) -> None:
    """Archiver lag: Redis has transaction 4, the history not yet."""
    with redis_sync.Redis.from_url(redis_db) as r:
        r.hset(keys.transaction(4), mapping={
            "charge_point_id": "CP2", "connector_id": "2", "id_tag": "TAG4", "meter_start": "5",
            "start_timestamp": "2024-01-04T10:00:00.000000Z", "id_tag_status": "Accepted",
        })  # fmt: skip
        r.sadd(keys.ACTIVE_TRANSACTIONS, 4)
    live = (await client.get("/v1/transactions/4")).json()
    assert live == {
        "transaction_id": 4, "charge_point_id": "CP2", "connector_id": 2, "id_tag": "TAG4",
        "active": True, "meter_start": 5, "start_timestamp": "2024-01-04T10:00:00.000000Z",
        "reservation_id": None, "id_tag_status": "Accepted", "meter_stop": None,
        "stop_timestamp": None, "stop_reason": None, "stop_id_tag": None, "energy_wh": None,
        "archived": False, "meter_values": [], "meter_values_truncated": False,
    }  # fmt: skip
    # The listing is the history's alone.
    assert await page(client, "?charge_point_id=CP2") == ([2], None)
    assert_problem(await client.get("/v1/transactions/99"), 404, "transaction 99")
    # Past PostgreSQL's integer: no such transaction, not a 500.
    assert_problem(await client.get(f"/v1/transactions/{2**40}"), 404, "does not exist")
    assert_problem(await client.get(f"/v1/transactions?before={2**40}"), 400, "before")


async def test_closed_transactions_outlive_redis(client: Client, redis_db: str) -> None:
    """Once archived, Redis may drop a transaction (or lose everything):
    it and its samples are still served."""
    with redis_sync.Redis.from_url(redis_db) as r:
        r.flushall()
    assert await page(client, "") == ([3, 2, 1], None)
    detail = (await client.get("/v1/transactions/1")).json()
    assert detail["archived"] is True and detail["energy_wh"] == 1000
    assert [v["value"] for v in detail["meter_values"]] == ["150"]
    assert len((await client.get("/v1/transactions/3")).json()["meter_values"]) == 3


async def sessions(client: Client, query: str) -> tuple[list[tuple[str, str]], str | None]:
    resp = await client.get(f"/v1/v201/transactions{query}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    found = [(t["charge_point_id"], t["transaction_id"]) for t in body["transactions"]]
    return found, body["next_before"]


ALL_SESSIONS = [("CP202", "tx-a"), ("CP201", "tx-b"), ("CP201", "tx-a"), ("CP201", "tx-c")]


async def test_v201_sessions_latest_started_first_and_filtered(client: Client) -> None:
    # A start shared by two sessions orders them by key; none, last.
    assert await sessions(client, "") == (ALL_SESSIONS, None)
    assert await sessions(client, "?active=false") == ([("CP201", "tx-a")], None)
    assert await sessions(client, "?charge_point_id=CP201&active=true") == (
        [("CP201", "tx-b"), ("CP201", "tx-c")], None)  # fmt: skip
    assert await sessions(client, "?id_token=TOK1") == (
        [("CP202", "tx-a"), ("CP201", "tx-a")], None)  # fmt: skip
    assert await sessions(client, "?started_from=2024-02-02T00:00:00Z") == (ALL_SESSIONS[:2], None)
    assert await sessions(client, "?started_to=2024-02-02T00:00:00Z") == ([("CP201", "tx-a")], None)
    # 1.6's listing is 1.6's alone.
    assert await page(client, "?charge_point_id=CP201") == ([], None)


async def test_v201_sessions_page_through_ties_and_sessions_without_a_start(
    client: Client,
) -> None:
    for limit in (1, 2, 3):
        seen: list[tuple[str, str]] = []
        found, cursor = await sessions(client, f"?limit={limit}")
        seen += found
        while cursor is not None:
            found, cursor = await sessions(client, f"?limit={limit}&before={cursor}")
            seen += found
        assert seen == ALL_SESSIONS, limit
    assert_problem(await client.get("/v1/v201/transactions?before=nonsense"), 400, "cursor")


async def test_v201_sessions_as_csv(client: Client) -> None:
    resp = await client.get("/v1/v201/transactions?active=false", headers={"accept": "text/csv"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert [(r["charge_point_id"], r["transaction_id"], r["energy_wh"], r["energy_kwh"],
             r["active"], r["stopped_reason"]) for r in rows] == [
        ("CP201", "tx-a", "7500", "7.500", "false", "EVDisconnected")]  # fmt: skip


async def test_v201_session_with_its_events_and_meter_values(client: Client) -> None:
    detail = (await client.get("/v1/v201/transactions/CP201/tx-a")).json()
    assert detail["energy_wh"] == 7500 and detail["active"] is False
    assert detail["evse_id"] == 1 and detail["id_token"] == "TOK1"
    assert [(e["seq_no"], e["event_type"], e["offline"]) for e in detail["events"]] == [
        (0, "Started", False), (1, "Updated", True), (2, "Ended", True)]  # fmt: skip
    assert [(v["sampled_at"], v["value"]) for v in detail["meter_values"]] == [
        ("2024-02-01T10:00:00.000000Z", "1000"),
        ("2024-02-01T11:00:00.000000Z", "8500"),
    ]
    # The same id on another station is another session.
    other = (await client.get("/v1/v201/transactions/CP202/tx-a")).json()
    assert other["active"] is True and [v["value"] for v in other["meter_values"]] == ["0"]
    assert other["events"] == []


async def test_v201_session_not_archived_yet_comes_from_redis(
    client: Client, redis_db: str
) -> None:
    with redis_sync.Redis.from_url(redis_db) as r:
        r.hset(keys.transaction_v201("CP203", "tx-z"), mapping={
            "started_at": "2024-02-03T10:00:00.000000Z", "evse_id": "2", "connector_id": "1",
            "id_token": "TOK9", "id_token_type": "Central", "event_type": "Updated",
        })  # fmt: skip
    live = (await client.get("/v1/v201/transactions/CP203/tx-z")).json()
    assert live["archived"] is False and live["active"] is True
    assert (live["evse_id"], live["id_token"], live["start_timestamp"]) == (
        2, "TOK9", "2024-02-03T10:00:00.000000Z")  # fmt: skip
    assert_problem(await client.get("/v1/v201/transactions/CP203/nope"), 404, "nope")


async def test_charger_events_newest_first(client: Client) -> None:
    resp = await client.get(f"/v1/charge-points/{CP}/events")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["charge_point_id"] == CP and body["next_before"] is None
    assert [(e["kind"], e["occurred_at"], e["connector_id"]) for e in body["events"]] == [
        ("status", "2024-01-01T09:05:00.000000Z", 0),
        ("status", "2024-01-01T09:05:00.000000Z", 1),
        ("status", "2024-01-01T09:01:00.000000Z", 1),
        ("boot", "2024-01-01T09:00:00.000000Z", None),
    ]
    assert body["events"][1] == {
        "kind": "status", "occurred_at": "2024-01-01T09:05:00.000000Z", "connector_id": 1,
        "details": {"status": "Charging", "errorCode": "NoError"},
        "record_id": "1704099900000-0", "seq": 0,
    }  # fmt: skip

    async def kinds(query: str) -> list[tuple[str, str]]:
        resp = await client.get(f"/v1/charge-points/{CP}/events{query}")
        assert resp.status_code == 200, resp.text
        return [(e["kind"], e["occurred_at"][11:16]) for e in resp.json()["events"]]

    assert await kinds("?kind=boot") == [("boot", "09:00")]
    assert await kinds("?from=2024-01-01T09:01:00Z&to=2024-01-01T09:05:00Z") == [
        ("status", "09:01")
    ]
    assert await kinds("?kind=firmware_status") == []
    assert (await client.get("/v1/charge-points/NOPE/events")).json()["events"] == []

    # Paging through ties in time: every event once, in the same order.
    seen, cursor = [], None
    while True:
        query = "?limit=1" + (f"&before={cursor}" if cursor else "")
        got = (await client.get(f"/v1/charge-points/{CP}/events{query}")).json()
        seen += got["events"]
        cursor = got["next_before"]
        if cursor is None:
            break
    assert seen == body["events"]

    assert_problem(await client.get(f"/v1/charge-points/{CP}/events?before=nonsense"), 400,
                   "before")  # fmt: skip
    assert_problem(await client.get(f"/v1/charge-points/{CP}/events?from=2024-01-01"), 400,
                   "from", "time zone")  # fmt: skip
    assert_problem(await client.get(f"/v1/charge-points/{CP}/events?limit=0"), 400, "limit")


async def test_command_history(client: Client, redis_db: str) -> None:
    resp = await client.get(f"/v1/commands?charge_point_id={CP}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [c["command_id"] for c in body["commands"]] == ["c-3", "c-2", "c-1"]
    assert body["next_before"] is None
    answered = body["commands"][2]
    assert answered == {
        "command_id": "c-1", "charge_point_id": CP, "action": "Reset", "state": "answered",
        "request": {"type": "Soft"}, "result": {"status": "Accepted"}, "status": "Accepted",
        "error_code": None, "error_description": None, "timeout_ms": None,
        "created_at_ms": 1704110400000, "sent_at_ms": 1704110400100,
        "completed_at_ms": 1704110400350, "round_trip_ms": 250, "late_reply": None,
    }  # fmt: skip
    failed = body["commands"][1]
    assert failed["error_code"] == "NotImplemented" and failed["result"] is None
    assert body["commands"][0]["state"] == "queued" and body["commands"][0]["sent_at_ms"] is None

    first = (await client.get(f"/v1/commands?charge_point_id={CP}&limit=2")).json()
    assert [c["command_id"] for c in first["commands"]] == ["c-3", "c-2"]
    rest = await client.get(
        f"/v1/commands?charge_point_id={CP}&limit=2&before={first['next_before']}"
    )
    assert [c["command_id"] for c in rest.json()["commands"]] == ["c-1"]
    assert rest.json()["next_before"] is None
    assert_problem(await client.get("/v1/commands"), 400, "charge_point_id")

    # One command: Redis while it has it (live), then the history.
    sent = await client.post(f"/v1/charge-points/{CP}/commands/ClearCache")
    live_id = sent.json()["command_id"]
    assert (await client.get(f"/v1/commands/{live_id}")).json()["state"] == "sent"
    assert (await client.get("/v1/commands/c-1")).json() == answered
    with redis_sync.Redis.from_url(redis_db) as r:
        r.flushall()
    assert_problem(await client.get(f"/v1/commands/{live_id}"), 404, live_id)
    assert (await client.get("/v1/commands/c-2")).json()["state"] == "failed"


async def test_history_needs_a_database_url(redis_db: str) -> None:
    seed(redis_db)
    async with AsyncTestClient(app=create_app(ApiSettings(redis_url=redis_db))) as c:
        for path in ("/v1/transactions", "/v1/transactions/1", f"/v1/charge-points/{CP}/events",
                     f"/v1/commands?charge_point_id={CP}"):  # fmt: skip
            assert_problem(await c.get(path), 503, "history needs DATABASE_URL")
        # Live state is Redis's: unaffected. A command Redis does not have
        # does not exist as far as the API can tell.
        assert (await c.get(f"/v1/charge-points/{CP}")).status_code == 200
        assert (await c.get("/readyz")).json() == {"ready": True}
        assert_problem(await c.get("/v1/commands/nope"), 404, "nope")
        doc = (await c.get("/schema/openapi.json")).json()
        listing = doc["paths"]["/v1/transactions"]["get"]
        assert set(listing["responses"]["200"]["content"]) == {"application/json", "text/csv"}
        assert "503" in listing["responses"]


async def test_postgres_down_is_a_503_naming_it_without_its_password(
    redis_db: str, private_postgres: PostgresServer
) -> None:
    """The API starts while PostgreSQL is down and serves live routes;
    history answers once it is up, and 503 again while it is down."""
    password = "pg-Secret-42"
    url = private_postgres.url.replace("postgres@", f"postgres:{password}@")
    await write_history(url)  # trust authentication: the password is not checked
    private_postgres.stop()
    seed(redis_db)
    async with AsyncTestClient(
        app=create_app(ApiSettings(redis_url=redis_db, database_url=url))
    ) as c:
        for path in ("/v1/transactions", "/v1/transactions/3", f"/v1/charge-points/{CP}/events",
                     f"/v1/commands?charge_point_id={CP}", "/v1/commands/c-1"):  # fmt: skip
            body = assert_problem(await c.get(path), 503, "history database",
                                  f"127.0.0.1:{private_postgres.port}", "***")  # fmt: skip
            assert password not in body["detail"]
        assert (await c.get("/v1/charge-points")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200

        await anyio.to_thread.run_sync(private_postgres.start)
        assert await page(c, "") == ([3, 2, 1], None)  # the pool connects now

        await anyio.to_thread.run_sync(private_postgres.stop)
        body = assert_problem(await c.get("/v1/transactions/3"), 503, "history database")
        assert password not in body["detail"]

        # Back again: the pool's connection from before the restart is
        # dead, and is replaced without a failed request.
        await anyio.to_thread.run_sync(private_postgres.start)
        assert len((await c.get("/v1/transactions/3")).json()["meter_values"]) == 3


async def test_schema_not_migrated_is_a_503(redis_db: str, postgres_db: str) -> None:
    app = create_app(ApiSettings(redis_url=redis_db, database_url=postgres_db))
    async with AsyncTestClient(app=app) as c:
        assert_problem(await c.get("/v1/transactions"), 503, "UndefinedTableError", "transactions")

        # Migrated meanwhile (by ocpp-archiver migrate): answered without a restart.
        await write_history(postgres_db)

        async def answered() -> bool:
            return (await c.get("/v1/transactions")).status_code == 200

        with anyio.fail_after(10):
            await wait_until(answered)


async def test_a_database_url_that_does_not_parse_stops_the_api_without_quoting_it(
    redis_db: str,
) -> None:
    secret = "p/ss#word"
    url = f"postgresql://u:{secret}@host:5432/db"
    with pytest.raises(ValueError, match="DATABASE_URL is not a valid") as raised:
        create_app(ApiSettings(redis_url=redis_db, database_url=url))
    assert secret not in str(raised.value)
    env = {**os.environ, "REDIS_URL": redis_db, "DATABASE_URL": url}
    with anyio.fail_after(30):
        done = await anyio.run_process([sys.executable, "-m", "adapters.api"], env=env,
                                       check=False)  # fmt: skip
    stderr = done.stderr.decode()
    assert done.returncode == 1 and "DATABASE_URL is not a valid" in stderr, stderr
    assert secret not in stderr
