"""OCPP 2.0.1 sessions end to end: the ``ocpp`` package's 2.0.1 charge
point through the gateway, adapter, processor and archiver into a real
PostgreSQL, with TransactionEvents repeated, reordered and queued offline."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
import redis
import websockets
from ocpp.v201 import ChargePoint
from ocpp.v201 import call as call201
from websockets.exceptions import ConnectionClosed

from adapters.devstack import Service, free_port, listening, wait_for
from processor import keys
from tests.integration.test_archiver import archiver, query, stop_all

pytestmark = pytest.mark.slow

TIMEOUT = 10.0
T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


@asynccontextmanager
async def station(port: int, name: str) -> AsyncIterator[ChargePoint]:
    url = f"ws://127.0.0.1:{port}/{name}"
    async with websockets.connect(url, subprotocols=["ocpp2.0.1"], open_timeout=TIMEOUT) as ws:
        cp = ChargePoint(name, ws, response_timeout=TIMEOUT)

        async def read() -> None:
            with suppress(ConnectionClosed):
                await cp.start()

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            yield cp
            tg.cancel_scope.cancel()


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
    if seq == 3:
        info["stopped_reason"] = "EVDisconnected"
    return call201.TransactionEvent(
        event_type=kind, timestamp=at, trigger_reason="Authorized", seq_no=seq,
        transaction_info=info, offline=seq == 2, **extra,
    )  # fmt: skip


async def send(cp: ChargePoint, tid: str, order: Sequence[int]) -> list[Any]:
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
    port = free_port()
    services = [
        Service("adapters", redis_db),
        Service("processor", redis_db, env={"OCPP_READ_BLOCK_MS": "200"}),
        archiver(redis_db, postgres_db),
        Service("adapters.gateway", redis_db,
                env={"OCPP_GATEWAY_HOST": "127.0.0.1", "OCPP_GATEWAY_PORT": str(port)}),
    ]  # fmt: skip
    try:
        wait_for(lambda: listening(port), 30, "the gateway to listen")
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
            assert held["evse_id"] == "1"
            assert 0 < client.ttl(keys.transaction_v201(name, tid)) <= 7 * 86400
        client.close()
    finally:
        stop_all(*services)
