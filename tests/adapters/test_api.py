"""The HTTP API on a real Redis (and PostgreSQL for history: more of it in
``test_api_history.py``).

Most tests drive the app in process (Litestar's AsyncTestClient) against
state written straight into Redis the way docs/state.md describes it. The
``stack`` tests run the real thing: ``python -m adapters.api`` under uvicorn
on a free port, a processor and an adapter as subprocesses, a charger
simulated by pushing its frames onto ``ocpp:requests`` as the ws-server
does, a history database, and httpx as the client.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx
import pytest
import redis as redis_sync
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from adapters.api import ApiSettings, create_app
from adapters.devstack import Service, free_port, wait_for
from processor import keys
from processor.redis_io import connect
from processor.v16.messages import CENTRAL_INITIATED
from processor.v201.messages import CENTRAL_INITIATED as CENTRAL_INITIATED_201
from tests.adapters.history import METER_VALUE, TRANSACTION, at, migrated
from tests.messages import call

pytestmark = pytest.mark.anyio

CP = "CP1"
TOKEN = "s3cret-token-4f9a2c7e"  # 16 characters or more, as ocpp-api wants
PROBLEM = "application/problem+json"


# --- state as the processor writes it ---------------------------------------


def seed(url: str) -> None:
    """Two chargers, CP1 charging in transaction 3 (1 and 2 finished, one on
    CP2), CP1's configuration, and an idTag."""
    r = redis_sync.Redis.from_url(url)
    try:
        p = r.pipeline()
        p.sadd(keys.CHARGE_POINTS, CP, "CP2")
        p.hset(keys.charge_point(CP), mapping={
            "charge_point_vendor": "Acme", "charge_point_model": "Fast", "firmware_version": "1.2",
            "registration_status": "Accepted", "last_boot": "2024-01-01T12:00:00.000000Z",
            "last_seen": "2024-01-01T12:05:00.000000Z", "firmware_status": "Installed",
        })  # fmt: skip
        p.hset(keys.charge_point("CP2"), mapping={"charge_point_vendor": "Other",
                                                   "charge_point_model": "Slow"})  # fmt: skip
        p.sadd(keys.connectors(CP), 0, 1, 2)
        p.hset(keys.connector(CP, 0), mapping={"status": "Available", "error_code": "NoError"})
        p.hset(keys.connector(CP, 1), mapping={
            "status": "Charging", "error_code": "NoError", "info": "", "vendor_id": "",
            "vendor_error_code": "", "status_timestamp": "2024-01-01T12:01:00.000000Z",
            "transaction_id": "3",
        })  # fmt: skip
        p.hset(keys.configuration(CP), mapping={
            "HeartbeatInterval": json.dumps({"key": "HeartbeatInterval", "readonly": False,
                                             "value": "300"}),
            "NumberOfConnectors": json.dumps({"key": "NumberOfConnectors", "readonly": True,
                                              "value": "2"}),
        })  # fmt: skip
        p.set(keys.TXN_SEQ, 3)
        for tid, cp, tag in ((1, CP, "TAG1"), (2, "CP2", "TAG2"), (3, CP, "TAG1")):
            p.hset(keys.transaction(tid), mapping={
                "charge_point_id": cp, "connector_id": "1", "id_tag": tag, "meter_start": "100",
                "start_timestamp": f"2024-01-0{tid}T10:00:00.000000Z", "id_tag_status": "Accepted",
            })  # fmt: skip
        for tid in (1, 2):
            p.hset(keys.transaction(tid), mapping={
                "meter_stop": "1100", "stop_timestamp": f"2024-01-0{tid}T11:00:00.000000Z",
                "stop_reason": "Local", "energy_wh": "1000", "closed": "1",
            })  # fmt: skip
        p.sadd(keys.ACTIVE_TRANSACTIONS, 3)
        p.hset(keys.id_tag("TAG1"), mapping={"status": "Accepted"})
        p.set(keys.id_tag_active("TAG1"), 3)
        p.execute()
    finally:
        r.close()


@pytest.fixture
async def redis(redis_db: str) -> AsyncIterator[Redis]:
    client = connect(redis_db)
    yield client
    await client.aclose()


@pytest.fixture
async def client(redis_db: str) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(ApiSettings(redis_url=redis_db))) as c:
        yield c


def assert_problem(resp: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    """An RFC 9457 body with the status, saying what was wrong."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = resp.json()
    assert set(body) == {"type", "title", "status", "detail"}
    assert body["status"] == status and body["type"] == "about:blank" and body["title"]
    for fragment in fragments:
        assert fragment in body["detail"], body
    return body


# --- reads -------------------------------------------------------------------


async def test_charge_points_list_and_detail(client: AsyncTestClient[Any], redis_db: str) -> None:
    seed(redis_db)
    resp = await client.get("/v1/charge-points")
    assert resp.status_code == 200
    assert resp.json() == {"charge_points": [
        {"charge_point_id": CP, "charge_point_vendor": "Acme", "charge_point_model": "Fast",
         "registration_status": "Accepted", "last_boot": "2024-01-01T12:00:00.000000Z",
         "last_seen": "2024-01-01T12:05:00.000000Z"},
        {"charge_point_id": "CP2", "charge_point_vendor": "Other", "charge_point_model": "Slow",
         "registration_status": None, "last_boot": None, "last_seen": None},
    ]}  # fmt: skip

    cp = (await client.get(f"/v1/charge-points/{CP}")).json()
    assert cp["charge_point_vendor"] == "Acme" and cp["firmware_version"] == "1.2"
    assert cp["registration_status"] == "Accepted"
    assert cp["last_seen"] == "2024-01-01T12:05:00.000000Z"
    assert cp["attributes"] == {"firmware_status": "Installed"}
    assert [c["connector_id"] for c in cp["connectors"]] == [0, 1, 2]
    assert cp["connectors"][1] == {
        "connector_id": 1, "status": "Charging", "error_code": "NoError", "info": None,
        "vendor_id": None, "vendor_error_code": None,
        "status_timestamp": "2024-01-01T12:01:00.000000Z", "transaction_id": 3,
    }  # fmt: skip
    assert cp["connectors"][2]["status"] is None  # reported by a transaction only
    assert cp["configuration"] == [
        {"key": "HeartbeatInterval", "readonly": False, "value": "300"},
        {"key": "NumberOfConnectors", "readonly": True, "value": "2"},
    ]
    cp2 = (await client.get("/v1/charge-points/CP2")).json()
    assert cp2["connectors"] == [] and cp2["configuration"] is None

    assert_problem(await client.get("/v1/charge-points/NOPE"), 404, "NOPE")


# --- id tags -----------------------------------------------------------------


async def test_id_tag_put_get_delete(client: AsyncTestClient[Any], redis: Redis) -> None:
    body = {"status": "Accepted", "expiry_date": "2030-01-01T02:00:00+02:00",
            "parent_id_tag": "PARENT"}  # fmt: skip
    created = await client.put("/v1/id-tags/TAG9", json=body)
    assert created.status_code == 201, created.text
    entry = {"id_tag": "TAG9", "status": "Accepted", "expiry_date": "2030-01-01T00:00:00.000Z",
             "parent_id_tag": "PARENT", "active_transaction_id": None}  # fmt: skip
    assert created.json() == entry
    # Stored as the processor reads it: the hash replaced, the date in UTC.
    assert await redis.hgetall(keys.id_tag("TAG9")) == {
        b"status": b"Accepted", b"expiry_date": b"2030-01-01T00:00:00.000Z",
        b"parent_id_tag": b"PARENT",
    }  # fmt: skip
    assert (await client.get("/v1/id-tags/TAG9")).json() == entry

    replaced = await client.put("/v1/id-tags/TAG9", json={"status": "Blocked"})
    assert replaced.status_code == 200
    assert await redis.hgetall(keys.id_tag("TAG9")) == {b"status": b"Blocked"}

    await redis.set(keys.id_tag_active("TAG9"), 7)
    assert (await client.get("/v1/id-tags/TAG9")).json()["active_transaction_id"] == 7

    assert (await client.delete("/v1/id-tags/TAG9")).status_code == 204
    assert not await redis.exists(keys.id_tag("TAG9"))
    assert_problem(await client.get("/v1/id-tags/TAG9"), 404, "TAG9")
    assert_problem(await client.delete("/v1/id-tags/TAG9"), 404, "TAG9")


@pytest.mark.parametrize(
    ("path", "body", "fragments"),
    [
        ("X" * 21, {"status": "Accepted"}, ("id_tag", "20")),
        ("TAG", {"status": "Maybe"}, ("status", "Maybe")),
        ("TAG", {}, ("status",)),
        ("TAG", {"status": "Accepted", "expiry_date": "2030-01-01T00:00:00"}, ("expiry_date",
                                                                               "timezone")),
        ("TAG", {"status": "Accepted", "expiry_date": "soon"}, ("expiry_date", "datetime")),
        ("TAG", {"status": "Accepted", "parent_id_tag": "P" * 21}, ("parent_id_tag", "20")),
        ("TAG", {"status": "Accepted", "expiryDate": "2030-01-01T00:00:00Z"}, ("expiryDate",)),
        ("TAG", "not json", ("JSON",)),
        ("TAG", '{"status":' + "[" * 5000 + "]" * 5000 + "}", ("nests deeper than 64",)),
        ("TAG", '{"status":"Accepted","x":' + "9" * 50_000 + "}", ("out of range",)),
    ],
)  # fmt: skip
async def test_id_tag_invalid_input_is_a_problem(
    client: AsyncTestClient[Any], redis: Redis, path: str, body: Any, fragments: tuple[str, ...]
) -> None:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    resp = await client.put(f"/v1/id-tags/{path}", content=content,
                            headers={"content-type": "application/json"})  # fmt: skip
    assert_problem(resp, 400, *fragments)
    assert await redis.keys("ocpp:idtag:*") == []
    assert_problem(await client.get("/v1/id-tags/" + "X" * 21), 400, "id_tag")


# --- commands ----------------------------------------------------------------


async def test_command_is_sent_and_can_be_looked_up(
    client: AsyncTestClient[Any], redis: Redis, redis_db: str
) -> None:
    seed(redis_db)
    traceparent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    resp = await client.post(f"/v1/charge-points/{CP}/commands/Reset", json={"type": "Soft"},
                             headers={"traceparent": traceparent})  # fmt: skip
    assert resp.status_code == 202, resp.text
    command = resp.json()
    assert resp.headers["location"] == f"/v1/commands/{command['command_id']}"
    assert command["state"] == "sent" and command["action"] == "Reset"
    assert command["charge_point_id"] == CP and command["request"] == {"type": "Soft"}
    assert command["timeout_ms"] == 30000 and command["result"] is None
    # The CALL is on its way to the charger, as the ws-server will pop it.
    [raw] = await redis.lrange(keys.responses(CP), 0, -1)
    frame = json.loads(raw)
    assert frame["payload"] == [2, command["command_id"], "Reset", {"type": "Soft"}]
    fields = await redis.hgetall(keys.command(command["command_id"]))
    assert fields[b"traceparent"].startswith(b"00-111")

    got = await client.get(resp.headers["location"])
    assert got.status_code == 200 and got.json()["command_id"] == command["command_id"]
    # An empty body is {}; a second command waits for the first.
    queued = await client.post(f"/v1/charge-points/{CP}/commands/ClearCache?timeout=5")
    assert queued.status_code == 202 and queued.json()["state"] == "queued"
    assert queued.json()["request"] == {} and queued.json()["timeout_ms"] == 5000
    # Waiting for a command nobody answers gives it back as it stands.
    waited = await client.post(f"/v1/charge-points/{CP}/commands/ClearCache?wait=0.2", json={})
    assert waited.status_code == 202 and waited.json()["state"] == "queued"

    assert_problem(await client.get("/v1/commands/nope"), 404, "nope")


async def test_command_answered_meanwhile_comes_back_with_200(
    client: AsyncTestClient[Any], redis_db: str
) -> None:
    """?wait returns as soon as the command has an outcome (completed here by
    hand, as the commit does; the stack test has a real processor do it)."""
    seed(redis_db)

    def answer() -> None:
        # In a thread: the test client blocks this event loop during a request.
        r = redis_sync.Redis.from_url(redis_db)
        try:
            got: Any = r.brpop([keys.responses(CP)], timeout=4)
            assert got is not None
            mid = json.loads(got[1])["message_id"]
            r.hset(keys.command(mid), mapping={"state": "answered", "status": "Accepted",
                                               "result": '{"status":"Accepted"}'})  # fmt: skip
            r.lpush(keys.command_done(mid), 1)
        finally:
            r.close()

    with ThreadPoolExecutor(1) as pool:
        answered = pool.submit(answer)
        started = time.monotonic()
        resp = await client.post(f"/v1/charge-points/{CP}/commands/Reset?wait=20",
                                 json={"type": "Hard"})  # fmt: skip
        answered.result()
    assert time.monotonic() - started < 10
    assert resp.status_code == 200, resp.text
    assert "location" not in resp.headers
    body = resp.json()
    assert body["state"] == "answered" and body["status"] == "Accepted"
    assert body["result"] == {"status": "Accepted"}


async def test_commands_are_those_of_the_chargers_version(
    client: AsyncTestClient[Any], redis: Redis, redis_db: str
) -> None:
    seed(redis_db)
    await redis.hset(keys.charge_point("CP2"), "protocol", "ocpp2.0.1")
    start = {"idToken": {"idToken": "T1", "type": "Central"}, "remoteStartId": 7}
    resp = await client.post("/v1/charge-points/CP2/commands/RequestStartTransaction",
                             json=start)  # fmt: skip
    assert resp.status_code == 202, resp.text
    [raw] = await redis.lrange(keys.responses("CP2"), 0, -1)
    assert json.loads(raw)["payload"][2:] == ["RequestStartTransaction", start]
    fields = await redis.hgetall(keys.command(resp.json()["command_id"]))
    assert fields[b"protocol"] == b"ocpp2.0.1"
    # Each version's command refused for the other's charger, saying why.
    old = await client.post("/v1/charge-points/CP2/commands/RemoteStartTransaction",
                            json={"idTag": "T1"})  # fmt: skip
    assert_problem(old, 400, "RemoteStartTransaction is an ocpp1.6 command",
                   "speaks ocpp2.0.1")  # fmt: skip
    new = await client.post(f"/v1/charge-points/{CP}/commands/RequestStartTransaction",
                            json=start)  # fmt: skip
    assert_problem(new, 400, "RequestStartTransaction is an ocpp2.0.1 command", "speaks ocpp1.6")
    # A 2.0.1 request's own schema applies: 1.6's Reset type is not 2.0.1's.
    bad = await client.post("/v1/charge-points/CP2/commands/Reset", json={"type": "Hard"})
    assert_problem(bad, 400, "invalid Reset", "$.type")


async def test_a_charger_that_never_booted_takes_commands_of_the_default_version(
    redis: Redis, redis_db: str
) -> None:
    """On the allow-list, no boot yet: OCPP_DEFAULT_PROTOCOL says which
    commands it takes, as it says how the processors read its messages."""
    await redis.sadd(keys.KNOWN_CHARGE_POINTS, "NEW")
    start = {"idToken": {"idToken": "T1", "type": "Central"}, "remoteStartId": 7}
    path = "/v1/charge-points/NEW/commands/RequestStartTransaction"
    async with AsyncTestClient(app=create_app(ApiSettings(redis_url=redis_db))) as c16:
        assert_problem(await c16.post(path, json=start), 400, "speaks ocpp1.6")
    settings = ApiSettings(redis_url=redis_db, default_protocol="ocpp2.0.1")
    async with AsyncTestClient(app=create_app(settings)) as c201:
        resp = await c201.post(path, json=start)
        assert resp.status_code == 202, resp.text
        fields = await redis.hgetall(keys.command(resp.json()["command_id"]))
        assert fields[b"protocol"] == b"ocpp2.0.1"
        old = await c201.post("/v1/charge-points/NEW/commands/RemoteStartTransaction",
                              json={"idTag": "T1"})  # fmt: skip
        assert_problem(old, 400, "speaks ocpp2.0.1")


@pytest.mark.parametrize(
    ("path", "body", "status", "fragments"),
    [
        (f"{CP}/commands/Heartbeat", b"{}", 400, ("Heartbeat", "not a command")),
        (f"{CP}/commands/Bogus", b"{}", 400, ("Bogus",)),
        (f"{CP}/commands/Reset", b'{"type":"Hardest"}', 400, ("invalid Reset", "$.type")),
        (f"{CP}/commands/Reset", b"{}", 400, ("invalid Reset", "type")),
        (f"{CP}/commands/Reset", b'{"type":', 400, ("not valid JSON",)),
        (f"{CP}/commands/UnlockConnector", b'{"connectorId":"one"}', 400, ("connectorId",)),
        (f"{CP}/commands/Reset?wait=-1", b'{"type":"Hard"}', 400, ("wait",)),
        (f"{CP}/commands/Reset?wait=61", b'{"type":"Hard"}', 400, ("wait", "60")),
        (f"{CP}/commands/Reset?wait=soon", b'{"type":"Hard"}', 400, ("wait",)),
        (f"{CP}/commands/Reset?timeout=0", b'{"type":"Hard"}', 400, ("timeout",)),
        ("NOPE/commands/Reset", b'{"type":"Hard"}', 404, ("NOPE",)),
        # Deep, huge and broken bodies: refused, never a 500.
        (
            f"{CP}/commands/Reset",
            b'{"type":' + b"[" * 5000 + b"]" * 5000 + b"}",
            400,
            ("nests deeper than 64",),
        ),
        (
            f"{CP}/commands/UnlockConnector",
            b'{"connectorId":' + b"9" * 50_000 + b"}",
            400,
            ("connectorId", "out of range"),
        ),
        (f"{CP}/commands/Reset", b'{"type":"\xff"}', 400, ("not valid JSON", "UTF-8")),
        (f"{CP}/commands/Reset", b'{"type":"Hard"}' + b" " * (1 << 20), 413, ("Too Large",)),
    ],
)
async def test_invalid_command_is_a_problem_and_sends_nothing(
    client: AsyncTestClient[Any],
    redis: Redis,
    redis_db: str,
    path: str,
    body: bytes,
    status: int,
    fragments: tuple[str, ...],
) -> None:
    seed(redis_db)
    resp = await client.post(f"/v1/charge-points/{path}", content=body)
    assert_problem(resp, status, *fragments)
    assert await redis.keys("ocpp:cmd:*") == []
    assert await redis.keys("ocpp:responses:*") == []


async def test_every_central_action_is_accepted(
    client: AsyncTestClient[Any], redis_db: str
) -> None:
    """Each of the 26 actions routes to the queue (validated by it)."""
    seed(redis_db)
    assert len(CENTRAL_INITIATED) == 26
    for action in sorted(CENTRAL_INITIATED):
        resp = await client.post(f"/v1/charge-points/{CP}/commands/{action}", json={})
        # {} is valid for some, and for the rest the queue says what is missing.
        if resp.status_code == 400:
            assert_problem(resp, 400, f"invalid {action} request")
        else:
            assert resp.status_code == 202, resp.text


# --- the rest ----------------------------------------------------------------


async def test_unknown_routes_and_methods_are_problems(client: AsyncTestClient[Any]) -> None:
    assert_problem(await client.get("/v1/nothing"), 404, "/v1/nothing")
    huge = b'{"data": "' + b"x" * (1 << 20) + b'"}'
    assert_problem(await client.post(f"/v1/charge-points/{CP}/commands/DataTransfer",
                                     content=huge), 413)  # fmt: skip
    assert_problem(await client.delete("/v1/charge-points"), 405)
    assert_problem(await client.get("/v1/transactions/abc"), 404)


async def test_health_and_openapi(client: AsyncTestClient[Any]) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    doc = (await client.get("/schema/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert set(doc["paths"]) == {
        "/v1/charge-points/{charge_point_id}/commands/{action}", "/v1/commands/{command_id}",
        "/v1/commands", "/v1/charge-points", "/v1/charge-points/{charge_point_id}",
        "/v1/charge-points/{charge_point_id}/events", "/v1/transactions",
        "/v1/transactions/{transaction_id}", "/v1/id-tags/{id_tag}", "/healthz", "/livez",
        "/readyz", "/v1/v201/transactions", "/v1/charge-points/{charge_point_id}/frames",
        "/v1/v201/transactions/{charge_point_id}/{transaction_id}",
    }  # fmt: skip
    send = doc["paths"]["/v1/charge-points/{charge_point_id}/commands/{action}"]["post"]
    assert {"200", "202", "400", "404"} <= set(send["responses"])
    assert "requestBody" in send
    action = next(p for p in send["parameters"] if p["name"] == "action")
    assert set(action["schema"]["enum"]) == CENTRAL_INITIATED | CENTRAL_INITIATED_201
    assert "Problem" in doc["components"]["schemas"]


async def test_redis_down_gives_503() -> None:
    app = create_app(ApiSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    async with AsyncTestClient(app=app) as c:
        health = await c.get("/healthz")
        assert health.status_code == 503 and health.json() == {"status": "unavailable"}
        ready = await c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert ready.json()["reason"].startswith("redis unreachable: ")
        alive = await c.get("/livez")
        assert alive.status_code == 200 and alive.json() == {"alive": True}
        assert_problem(await c.get("/v1/charge-points"), 503, "Redis")


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN])
async def test_token_required_when_configured(redis_db: str, header: str | None) -> None:
    app = create_app(ApiSettings(redis_url=redis_db, api_token=TOKEN))
    async with AsyncTestClient(app=app) as c:
        headers = {"authorization": header} if header else {}
        for method, path in (("GET", "/v1/charge-points"), ("GET", "/v1/id-tags/T"),
                             ("POST", f"/v1/charge-points/{CP}/commands/ClearCache")):  # fmt: skip
            resp = await c.request(method, path, headers=headers)
            assert_problem(resp, 401, "bearer token")
            assert resp.headers["www-authenticate"] == "Bearer"
        ok = await c.get("/v1/charge-points", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        for path in ("/healthz", "/livez", "/readyz"):
            assert (await c.get(path)).status_code == 200, path
        ready = await c.get("/readyz")
        assert ready.json() == {"ready": True}
        doc = await c.get("/schema/openapi.json")
        assert doc.status_code == 200
        assert doc.json()["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


# --- the real thing ----------------------------------------------------------


class ApiServer:
    """``python -m adapters.api`` on a free port."""

    def __init__(self, redis_url: str, token: str = "", database_url: str = "") -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {"OCPP_API_HOST": "127.0.0.1", "OCPP_API_PORT": str(self.port),
               "OCPP_API_TOKEN": token, "OCPP_LOG_LEVEL": "WARNING",
               "DATABASE_URL": database_url}  # fmt: skip
        self.service = Service("adapters.api", redis_url, env=env)

        def ready() -> bool:
            if not self.service.alive():
                raise RuntimeError("the API server exited")
            try:
                return httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 30, "the API server to answer /healthz")


@pytest.fixture
def stack(redis_db: str, postgres_db: str) -> Iterator[ApiServer]:
    """The API (with a token and a migrated history database), an adapter
    and a processor; all must exit 0 on SIGTERM."""
    asyncio.run(migrated(postgres_db))
    services = [
        Service("adapters", redis_db),
        Service(
            "processor", redis_db, env={"OCPP_READ_BLOCK_MS": "200", "OCPP_COMMAND_SWEEP_MS": "50"}
        ),  # fmt: skip
    ]
    try:
        server = ApiServer(redis_db, TOKEN, postgres_db)
    except BaseException:
        for s in services:
            s.kill()
        raise
    services.append(server.service)
    yield server
    codes = [(s.module, s.terminate()) for s in reversed(services)]
    assert all(code == 0 for _, code in codes), codes


async def archive(url: str, tid: int) -> None:
    """Transaction ``tid`` and its one sample, as ocpp-archiver writes them."""
    connection = await asyncpg.connect(url)
    try:
        start = at("2024-01-01T12:00:00Z")
        await connection.execute(TRANSACTION, CP, tid, "RFID123", None, start, 10, None, None,
                                 None, None)  # fmt: skip
        await connection.execute(METER_VALUE, "1704110460000-0", 0, at("2024-01-01T12:01:00Z"),
                                 CP, tid, "42", None, None, None, None, None, None)  # fmt: skip
    finally:
        await connection.close()


def charger_says(r: redis_sync.Redis, *frames: bytes) -> None:
    for frame in frames:
        r.lpush(keys.REQUESTS, frame)


def charger_receives(r: redis_sync.Redis, timeout: float = 10) -> dict[str, Any]:
    got: Any = r.brpop([keys.responses(CP)], timeout=timeout)
    assert got is not None, "nothing reached the charger"
    envelope: dict[str, Any] = json.loads(got[1])
    return envelope


def answer(message_id: str, payload: Any) -> bytes:
    return json.dumps({"charge_point_id": CP, "message_type": 3, "message_id": message_id,
                       "payload": [3, message_id, payload],
                       "timestamp": "2024-01-01T12:00:01Z"}).encode()  # fmt: skip


def test_a_chargers_frames_are_recorded_while_someone_watches_it(
    stack: ApiServer, redis_db: str
) -> None:
    r = redis_sync.Redis.from_url(redis_db)
    boot = {"chargePointVendor": "Acme", "chargePointModel": "Fast"}
    try:
        with httpx.Client(base_url=stack.base, headers={"authorization": f"Bearer {TOKEN}"},
                          timeout=30) as http:  # fmt: skip
            charger_says(r, call(CP, "b1", "BootNotification", boot),
                         call("CP-UNWATCHED", "b1", "BootNotification", boot))  # fmt: skip
            charger_receives(r)
            assert r.brpop([keys.responses("CP-UNWATCHED")], timeout=10) is not None
            # Nobody watched it: its boot was not recorded. Now someone does.
            listed = http.get(f"/v1/charge-points/{CP}/frames").json()
            assert listed["frames"] == [] and listed["watched_until"] > "2024"

            shown: list[dict[str, Any]] = []

            def heartbeat_recorded() -> bool:
                charger_says(r, call(CP, "h1", "Heartbeat", {}))
                charger_receives(r)  # answered: its commit is in
                shown[:] = http.get(f"/v1/charge-points/{CP}/frames").json()["frames"]
                return bool(shown)  # the processors learn who is watched within 2 s

            wait_for(heartbeat_recorded, 15, "a watched charger's frames to be recorded", 0.2)
            assert [f["direction"] for f in shown[:2]] == ["out", "in"]  # newest first
            assert json.loads(shown[0]["frame"])[:2] == [3, "h1"]
            assert json.loads(shown[1]["frame"]) == [2, "h1", "Heartbeat", {}]
            # Our command is recorded as the CALL goes out.
            sent = http.post(f"/v1/charge-points/{CP}/commands/ClearCache", json={}).json()
            charger_receives(r)
            newest = http.get(f"/v1/charge-points/{CP}/frames").json()["frames"][0]
            assert newest["direction"] == "out"
            assert json.loads(newest["frame"]) == [2, sent["command_id"], "ClearCache", {}]
            assert http.get("/v1/charge-points/NOPE/frames").status_code == 404
        assert r.llen(keys.frames("CP-UNWATCHED")) == 0
    finally:
        r.close()


def test_stack_reads_what_the_processor_wrote_and_commands_round_trip(
    stack: ApiServer, redis_db: str, postgres_db: str
) -> None:
    r = redis_sync.Redis.from_url(redis_db)
    auth = {"authorization": f"Bearer {TOKEN}"}
    try:
        with httpx.Client(base_url=stack.base, headers=auth, timeout=30) as http:
            # A charger boots, starts charging and reports a meter value.
            charger_says(
                r,
                call(CP, "b1", "BootNotification",
                     {"chargePointVendor": "Acme", "chargePointModel": "Fast"}),
                call(CP, "s1", "StatusNotification",
                     {"connectorId": 1, "errorCode": "NoError", "status": "Charging"}),
                call(CP, "t1", "StartTransaction",
                     {"connectorId": 1, "idTag": "RFID123", "meterStart": 10,
                      "timestamp": "2024-01-01T12:00:00Z"}),
            )  # fmt: skip
            replies = [charger_receives(r) for _ in range(3)]
            tid = next(e["payload"][2]["transactionId"] for e in replies if e["message_id"] == "t1")
            reading = {"timestamp": "2024-01-01T12:01:00Z", "sampledValue": [{"value": "42"}]}
            charger_says(r, call(CP, "m1", "MeterValues",
                                 {"connectorId": 1, "transactionId": tid,
                                  "meterValue": [reading]}))  # fmt: skip
            charger_receives(r)

            assert [c["charge_point_id"] for c in http.get("/v1/charge-points").json()[
                "charge_points"]] == [CP]  # fmt: skip
            cp = http.get(f"/v1/charge-points/{CP}").json()
            assert cp["charge_point_vendor"] == "Acme"
            assert cp["registration_status"] == "Accepted" and cp["last_seen"]
            [connector] = cp["connectors"]
            assert connector["status"] == "Charging" and connector["transaction_id"] == tid
            # Not archived yet: the transaction as Redis has it, no meter values.
            txn = http.get(f"/v1/transactions/{tid}").json()
            assert txn["id_tag"] == "RFID123" and txn["meter_start"] == 10 and txn["active"]
            assert txn["archived"] is False and txn["meter_values"] == []
            query = {"active": "true", "charge_point_id": CP}
            assert http.get("/v1/transactions", params=query).json()["transactions"] == []
            # Archived (as ocpp-archiver will): the history answers, samples and all.
            asyncio.run(archive(postgres_db, tid))
            active = http.get("/v1/transactions", params=query).json()
            assert [t["transaction_id"] for t in active["transactions"]] == [tid]
            txn = http.get(f"/v1/transactions/{tid}").json()
            assert txn["archived"] is True and txn["id_tag"] == "RFID123"
            assert [(v["value"], v["sampled_at"][:19]) for v in txn["meter_values"]] == [
                ("42", "2024-01-01T12:01:00")
            ]
            csv_text = http.get("/v1/transactions", headers={"accept": "text/csv"}).text
            assert csv_text.splitlines()[1].startswith(f"{tid},{CP},1,RFID123,Accepted,")

            # A command, answered by the charger while the client waits.
            with ThreadPoolExecutor(1) as pool:
                future = pool.submit(
                    lambda: http.post(
                        f"/v1/charge-points/{CP}/commands/GetConfiguration",
                        params={"wait": "20"}, json={"key": ["HeartbeatInterval"]},
                    ),
                )  # fmt: skip
                sent = charger_receives(r)
                assert sent["action"] == "GetConfiguration"
                assert sent["payload"][3] == {"key": ["HeartbeatInterval"]}
                charger_says(r, answer(sent["message_id"], {"configurationKey": [
                    {"key": "HeartbeatInterval", "readonly": False, "value": "60"}]}))  # fmt: skip
                resp = future.result(timeout=30)
            assert resp.status_code == 200, resp.text
            command = resp.json()
            assert command["command_id"] == sent["message_id"]
            assert command["state"] == "answered" and command["round_trip_ms"] >= 0
            assert command["result"]["configurationKey"][0]["value"] == "60"
            assert http.get(f"/v1/commands/{command['command_id']}").json() == command
            # The result's effect is visible on the charger.
            assert http.get(f"/v1/charge-points/{CP}").json()["configuration"] == [
                {"key": "HeartbeatInterval", "readonly": False, "value": "60"}
            ]

            # A command nobody answers times out, swept by the processor.
            query = {"wait": "20", "timeout": "0.3"}
            resp = http.post(f"/v1/charge-points/{CP}/commands/Reset", params=query,
                             json={"type": "Soft"})  # fmt: skip
            assert resp.status_code == 200 and resp.json()["state"] == "timed_out"
            charger_receives(r)  # it was sent all the same

            # Authentication over the wire, and its exemptions.
            denied = httpx.get(f"{stack.base}/v1/charge-points")
            assert_problem(denied, 401, "bearer token")
            assert httpx.get(f"{stack.base}/healthz").json() == {"status": "ok"}
            assert httpx.get(f"{stack.base}/schema/openapi.json").status_code == 200
    finally:
        r.close()


def test_server_stops_gracefully_on_sigterm_while_a_request_waits(redis_db: str) -> None:
    """SIGTERM: the waiting request is answered, then the server exits 0."""
    seed(redis_db)
    server = ApiServer(redis_db)
    try:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(
                lambda: httpx.post(f"{server.base}/v1/charge-points/{CP}/commands/ClearCache"
                                   "?wait=1", timeout=30),
            )  # fmt: skip
            r = redis_sync.Redis.from_url(redis_db)
            try:
                wait_for(lambda: r.llen(keys.responses(CP)) == 1, 10, "the command to be sent")
            finally:
                r.close()
            server.service.process.send_signal(signal.SIGTERM)
            resp = future.result(timeout=30)
        assert resp.status_code == 202 and resp.json()["state"] == "sent"
        assert server.service.process.wait(30) == 0
    finally:
        if server.service.alive():
            server.service.kill()


def test_console_script_help_names_every_setting() -> None:
    out = subprocess.run([sys.executable, "-m", "adapters.api", "--help"], capture_output=True,
                         text=True, check=True, env={**os.environ}).stdout  # fmt: skip
    for flag in ("--api-host", "--api-port", "--api-token", "--api-insecure", "--redis-url",
                 "--database-url", "--log-level"):  # fmt: skip
        assert flag in out
    for env in ("OCPP_API_HOST", "OCPP_API_PORT", "OCPP_API_TOKEN", "OCPP_API_INSECURE",
                "REDIS_URL", "DATABASE_URL"):  # fmt: skip
        assert env in out
