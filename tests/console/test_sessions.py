"""OCPP 2.0.1 sessions in the console: their list, CSV and page, read from
a real PostgreSQL holding the rows of ``tests/adapters/history.py`` (the
console without a token, as on loopback)."""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from adapters.api import ApiSettings, create_app
from adapters.api_history import SESSION_CSV_COLUMNS
from tests.adapters.history import at, write_history

pytestmark = pytest.mark.anyio

Client = AsyncTestClient[Any]

# A session's reading in kWh-scaled Wh (multiplier 3), signed beside its value.
SIGNED = {"signedMeterData": "OCMF|{\"RD\":[{\"RV\":12.5}]}|{\"SD\":\"3045\"}",
          "signingMethod": "ECDSA-secp256r1-SHA256", "encodingMethod": "OCMF",
          "publicKey": "3059301306"}  # fmt: skip
READING = [{"value": 12.5, "unitOfMeasure": {"unit": "Wh", "multiplier": 3},
            "context": "Sample.Periodic", "signedMeterValue": SIGNED}]  # fmt: skip


@pytest.fixture
async def client(redis_db: str, postgres_db: str) -> AsyncIterator[Client]:
    await write_history(postgres_db)
    connection = await asyncpg.connect(postgres_db)
    try:
        await connection.execute(
            "INSERT INTO meter_values (record_id, seq, sampled_at, charge_point_id, connector_id,"
            " transaction_ref, sampled_values, reading_key) VALUES ('9-0', 0, $1, 'CP201', 2,"
            " 'tx-b', $2, 7)", at("2024-02-02T10:05:00Z"), json.dumps(READING))  # fmt: skip
    finally:
        await connection.close()
    app = create_app(ApiSettings(redis_url=redis_db, database_url=postgres_db))
    async with AsyncTestClient(app=app) as c:
        yield c


async def test_the_list_shows_sessions_with_links_to_their_pages(client: Client) -> None:
    page = await client.get("/transactions", params={"protocol": "ocpp2.0.1"})
    assert page.status_code == 200, page.text
    for cp, tid in (("CP202", "tx-a"), ("CP201", "tx-b"), ("CP201", "tx-a"), ("CP201", "tx-c")):
        assert f'href="/sessions/{cp}/{tid}"' in page.text
    assert "7.500 kWh" in page.text and "EVDisconnected" in page.text
    finished = await client.get("/transactions", params={"protocol": "ocpp2.0.1",
                                                          "status": "finished"})  # fmt: skip
    assert "/sessions/CP201/tx-a" in finished.text and "/sessions/CP201/tx-b" not in finished.text
    # 1.6's list is 1.6's alone; a protocol we do not list is refused.
    assert "/sessions/" not in (await client.get("/transactions")).text
    assert (await client.get("/transactions", params={"protocol": "ocpp9"})).status_code == 400


async def test_sessions_export_as_csv(client: Client) -> None:
    resp = await client.get("/transactions.csv", params={"protocol": "ocpp2.0.1",
                                                          "charge_point_id": "CP201"})  # fmt: skip
    assert resp.status_code == 200 and "sessions-ocpp201-" in resp.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(resp.text)))
    assert tuple(rows[0]) == SESSION_CSV_COLUMNS
    kwh = {r[1]: r[-1] for r in rows[1:]}
    assert kwh == {"tx-a": "7.500", "tx-b": "", "tx-c": ""}


async def test_a_sessions_page_has_its_events_chart_and_signed_data(client: Client) -> None:
    page = await client.get("/sessions/CP201/tx-a")
    assert page.status_code == 200, page.text
    text = html.unescape(page.text)
    assert "Session tx-a" in text and "EVCommunicationLost" in text
    assert [int(n) for n in ("0", "1", "2") if f'<td class="num">{n}</td>' in page.text] == [
        0,
        1,
        2,
    ]
    chart = json.loads(html.unescape(page.text.split('data-chart="')[1].split('"')[0]))
    assert chart["energy_kwh"] == [0.0, 7.5]  # 1,000 Wh then 8,500 Wh
    signed = await client.get("/sessions/CP201/tx-b")
    assert 'OCMF|{"RD"' in html.unescape(signed.text) and "ECDSA-secp256r1-SHA256" in signed.text
    detail = (await client.get("/v1/v201/transactions/CP201/tx-b")).json()
    [value] = detail["meter_values"]
    assert (value["value"], value["unit"], value["signed_meter_value"]) == ("12500", "Wh", SIGNED)
    assert (await client.get("/sessions/CP201/nope")).status_code == 404
