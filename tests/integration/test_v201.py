"""OCPP 2.0.1 end to end: the ``ocpp`` package's 2.0.1 charge point through
the gateway, adapter, processor and archiver into a real PostgreSQL. A
session's TransactionEvents repeated, reordered and queued offline; a
device model reported in parts, then got and set through commands."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
import redis
import websockets
from ocpp.routing import on
from ocpp.v201 import ChargePoint
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from websockets.exceptions import ConnectionClosed

from adapters.api_queries import send_command
from adapters.devstack import Service, free_port, listening, wait_for
from processor import keys
from processor.command_queue import CommandQueue
from processor.redis_io import connect
from tests.integration.test_archiver import archiver, query, stop_all
from tests.processor.test_handlers_v201 import REQUESTS

pytestmark = pytest.mark.slow

TIMEOUT = 10.0
T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


HEARTBEAT = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}


class Station(ChargePoint):  # type: ignore[misc]
    """Reports its device model in two parts when asked; gets and sets it."""

    interval = "300"

    @on("GetBaseReport")
    async def on_get_base_report(self, request_id: int, report_base: str, **_: Any) -> Any:
        return result201.GetBaseReport(status="Accepted")

    async def report(self, request_id: int) -> None:
        at = T0.isoformat().replace("+00:00", "Z")
        parts = [
            [{"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"},
              "variable_attribute": [{"value": self.interval, "mutability": "ReadWrite"}],
              "variable_characteristics": {"data_type": "integer", "unit": "s",
                                           "supports_monitoring": False}}],
            [{"component": {"name": "Connector", "evse": {"id": 1, "connector_id": 1}},
              "variable": {"name": "ConnectorType"},
              "variable_attribute": [{"value": "cType2", "mutability": "ReadOnly"}]}],
        ]  # fmt: skip
        for seq, data in enumerate(parts):
            await self.call(call201.NotifyReport(request_id=request_id, generated_at=at,
                                                 seq_no=seq, tbc=seq == 0, report_data=data),
                            suppress=False)  # fmt: skip

    @on("GetVariables")
    async def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        return result201.GetVariables(get_variable_result=[
            {"attribute_status": "Accepted", "attribute_value": self.interval, **d}
            for d in get_variable_data])  # fmt: skip

    @on("SetVariables")
    async def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        self.interval = set_variable_data[0]["attribute_value"]
        return result201.SetVariables(set_variable_result=[
            {"attribute_status": "Accepted", "component": d["component"],
             "variable": d["variable"]} for d in set_variable_data])  # fmt: skip


@asynccontextmanager
async def station(
    port: int, name: str, kind: type[ChargePoint] = Station
) -> AsyncIterator[ChargePoint]:
    """A 2.0.1 charge point of ``kind`` connected through the gateway, reading."""
    url = f"ws://127.0.0.1:{port}/{name}"
    async with websockets.connect(url, subprotocols=["ocpp2.0.1"], open_timeout=TIMEOUT) as ws:
        cp = kind(name, ws, response_timeout=TIMEOUT)

        async def read() -> None:
            with suppress(ConnectionClosed):
                await cp.start()

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            yield cp
            tg.cancel_scope.cancel()


def stack(redis_db: str, postgres_db: str | None = None) -> tuple[int, list[Service]]:
    """Gateway, adapter and processor (and an archiver with ``postgres_db``),
    once the gateway listens: its port, and the services to stop."""
    port = free_port()
    services = [Service("adapters", redis_db),
                Service("processor", redis_db, env={"OCPP_READ_BLOCK_MS": "200"}),
                Service("adapters.gateway", redis_db, env={
                    "OCPP_GATEWAY_HOST": "127.0.0.1", "OCPP_GATEWAY_PORT": str(port)})]  # fmt: skip
    if postgres_db is not None:
        services.append(archiver(redis_db, postgres_db))
    try:
        wait_for(lambda: listening(port), 30, "the gateway to listen")
    except BaseException:
        stop_all(*services)
        raise
    return port, services


def event(tid: str, seq: int) -> call201.TransactionEvent:
    """Event ``seq`` of a session: Started (seq 0, its EVSE, token and
    begin reading), Updated (1, 2; 2 queued offline), Ended (3)."""
    at = (T0 + timedelta(minutes=seq)).isoformat().replace("+00:00", "Z")
    kind = {0: "Started", 3: "Ended"}.get(seq, "Updated")
    info: dict[str, Any] = {"transaction_id": tid,
                            "charging_state": ["EVConnected", "Charging", "SuspendedEV",
                                               "Idle"][seq]}  # fmt: skip
    extra: dict[str, Any] = {}
    if seq == 0:
        extra |= {"evse": {"id": 1, "connector_id": 1},
                  "id_token": {"id_token": "TOKEN-1", "type": "ISO14443"}}  # fmt: skip
    if seq in (0, 3):
        extra["meter_value"] = [{"timestamp": at, "sampled_value": [
            {"value": 1000.0 if seq == 0 else 5.0, "context": ("Transaction.Begin", "", "",
                                                             "Transaction.End")[seq],
             "unit_of_measure": {"unit": "Wh" if seq == 0 else "kWh"}}]}]  # fmt: skip
    if seq == 3:  # stopped with another card: the session's stays TOKEN-1
        info["stopped_reason"] = "EVDisconnected"
        extra["id_token"] = {"id_token": "TOKEN-2", "type": "ISO14443"}
    return call201.TransactionEvent(
        event_type=kind, timestamp=at, trigger_reason="Authorized", seq_no=seq,
        transaction_info=info, offline=seq == 2, **extra,
    )  # fmt: skip


async def send(cp: Station, tid: str, order: Sequence[int]) -> list[Any]:
    return [await cp.call(event(tid, seq), suppress=False) for seq in order]


async def exchange(port: int) -> None:
    async with station(port, "CS-IN-ORDER") as a, station(port, "CS-BACKWARDS") as b:
        # In order; the first Updated retried (the ocpp charge point gives
        # every call a new message id); the offline one after the Ended.
        answers = await send(a, "TX-A", [0, 1, 1, 3, 2])
        assert answers[0].id_token_info["status"] == "Accepted"
        # A whole offline queue, delivered backwards.
        await send(b, "TX-B", [3, 2, 1, 0])


def test_transaction_events_converge_to_one_session_in_postgresql(
    redis_db: str, postgres_db: str
) -> None:
    port, services = stack(redis_db, postgres_db)
    try:
        anyio.run(exchange, port)
        query_rows = (
            "SELECT charge_point_id, evse_id, connector_id, id_token, id_token_status, "
            "started_at, meter_start, stopped_at, meter_stop, stopped_reason, energy_wh "
            "FROM transactions_v201 ORDER BY charge_point_id"
        )
        client = redis.Redis.from_url(redis_db, decode_responses=True)

        def archived() -> bool:
            groups = client.xinfo_groups(keys.HISTORY)  # none until the archiver made it
            return bool(groups) and groups[0]["pending"] == 0 and groups[0]["lag"] == 0

        wait_for(archived, 30, "history archived")
        rows = query(postgres_db, query_rows)
        for row in rows:
            assert (row["evse_id"], row["connector_id"], row["id_token"]) == (1, 1, "TOKEN-1")
            assert (row["meter_start"], row["meter_stop"], row["energy_wh"]) == (1000, 5000, 4000)
            assert row["stopped_reason"] == "EVDisconnected"
            assert (row["started_at"], row["stopped_at"]) == (T0, T0 + timedelta(minutes=3))
        events = query(postgres_db, "SELECT charge_point_id, seq_no, event_type, offline "
                                    "FROM transaction_events ORDER BY 1, 2")  # fmt: skip
        assert [(e["seq_no"], e["event_type"], e["offline"]) for e in events] == 2 * [
            (0, "Started", False), (1, "Updated", False), (2, "Updated", True),
            (3, "Ended", False)]  # fmt: skip
        samples = query(postgres_db, "SELECT count(*) AS n FROM meter_values "
                                     "WHERE transaction_ref IN ('TX-A', 'TX-B')")  # fmt: skip
        assert samples[0]["n"] == 4
        # Hot state: ended, and the late Updated did not make it current again.
        for name, tid in (("CS-IN-ORDER", "TX-A"), ("CS-BACKWARDS", "TX-B")):
            held = client.hgetall(keys.transaction_v201(name, tid))
            assert held["event_type"] == "Ended" and held["charging_state"] == "Idle"
            assert held["ended_at"] and held["stopped_reason"] == "EVDisconnected"
            assert held["evse_id"] == "1" and held["id_token"] == "TOKEN-1"
            assert 0 < client.ttl(keys.transaction_v201(name, tid)) <= 7 * 86400
        client.close()
    finally:
        stop_all(*services)


async def device_model(port: int, redis_url: str) -> list[Any]:
    """Boot, a base report asked through the command queue and sent in two
    parts, then the heartbeat interval got and set: the commands' outcomes."""
    client = connect(redis_url)
    queue = CommandQueue(client)
    outcomes = []
    try:
        async with station(port, "CS-MODEL") as cs:
            station_info = {"model": "M", "vendor_name": "V"}
            await cs.call(call201.BootNotification(charging_station=station_info,
                                                   reason="PowerUp"), suppress=False)  # fmt: skip
            for action, body in (
                ("GetBaseReport", {"requestId": 5, "reportBase": "FullInventory"}),
                ("GetVariables", {"getVariableData": [HEARTBEAT]}),
                ("SetVariables", {"setVariableData": [{"attributeValue": "60", **HEARTBEAT}]}),
            ):
                raw = json.dumps(body).encode()
                outcomes.append(await send_command(client, queue, "CS-MODEL", action, raw,
                                                   wait_s=10))  # fmt: skip
                if action == "GetBaseReport":
                    await cs.report(5)
    finally:
        await client.aclose()
    return outcomes


def test_a_device_model_is_reported_in_parts_then_got_and_set(
    redis_db: str, postgres_db: str
) -> None:
    port, services = stack(redis_db, postgres_db)
    try:
        outcomes = anyio.run(device_model, port, redis_db)
        assert [(c.action, c.state, c.status) for c in outcomes] == [
            ("GetBaseReport", "answered", "Accepted"), ("GetVariables", "answered", None),
            ("SetVariables", "answered", None)]  # fmt: skip
        client = redis.Redis.from_url(redis_db, decode_responses=True)
        heartbeat = '["OCPPCommCtrlr","",null,null,"HeartbeatInterval","","Actual"]'
        connector = '["Connector","",1,1,"ConnectorType","","Actual"]'
        assert client.hgetall(keys.variables("CS-MODEL")) == {heartbeat: "60", connector: "cType2"}
        report = client.hgetall(keys.report("CS-MODEL", 5))
        assert report["status"] == "Accepted" and report["last_part"] == "1"
        assert {"part:0", "part:1"} <= set(report)
        wait_for(lambda: len(query(postgres_db, "SELECT * FROM variable_values")) == 4, 30,
                 "the device model's history in PostgreSQL")  # fmt: skip
        rows = query(postgres_db, "SELECT variable, value, source FROM variable_values "
                                  "ORDER BY archived_at, origin, position")  # fmt: skip
        assert sorted((r["variable"], r["value"], r["source"]) for r in rows) == [
            ("ConnectorType", "cType2", "NotifyReport"),
            ("HeartbeatInterval", "300", "GetVariables"),
            ("HeartbeatInterval", "300", "NotifyReport"),
            ("HeartbeatInterval", "60", "SetVariables")]  # fmt: skip
        client.close()
    finally:
        stop_all(*services)


def snake(value: Any) -> Any:
    """A payload as the ocpp package's dataclasses take it (snake_case keys;
    it turns them back into camelCase on the wire)."""
    if isinstance(value, dict):
        return {re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", k).lower(): snake(v)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [snake(v) for v in value]
    return value


async def every_message(port: int) -> dict[str, Any]:
    answers = {}
    async with station(port, "CS-ALL") as cs:
        for action, payload in REQUESTS.items():
            request = getattr(call201, action)(**snake(payload))
            answers[action] = await cs.call(request, suppress=False)
    return answers


def test_every_message_a_station_sends_is_answered_valid_by_the_real_stack(redis_db: str) -> None:
    """Through gateway, adapter and processor, the ocpp package's 2.0.1
    charge point checks each answer against the official schema itself."""
    port, services = stack(redis_db)
    try:
        answers = anyio.run(every_message, port)
    finally:
        stop_all(*services)
    assert set(answers) == set(REQUESTS) and len(answers) == 25
    assert answers["BootNotification"].status == "Accepted"
    assert answers["Get15118EVCertificate"].status == "Failed"
