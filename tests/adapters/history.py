"""History rows as ocpp-archiver would write them, straight into a migrated
database: what the API's and the CLI's history tests read."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg

from adapters.archiver.asyncpg_connector import connect
from adapters.archiver.migrate import ensure_partitions, migrate

CP = "CP1"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


TRANSACTION = """INSERT INTO transactions (charge_point_id, transaction_id, connector_id, id_tag,
    id_tag_status, reservation_id, started_at, meter_start, stopped_at, meter_stop, stop_reason,
    stop_id_tag) VALUES ($1, $2, 1, $3, 'Accepted', $4, $5, $6, $7, $8, $9, $10)"""
# A meterValue of one sampled value, given attribute by attribute (value,
# context, format, measurand, phase, location, unit; None: left out);
# hashtext stands in for the archiver's digest of its content.
METER_VALUE = """INSERT INTO meter_values (record_id, seq, sampled_at, charge_point_id,
    connector_id, transaction_id, sampled_values, reading_key) VALUES ($1, $2, $3, $4, 1, $5,
    json_build_array(json_strip_nulls(json_build_object('value', $6::text,
        'context', $7::text, 'format', $8::text, 'measurand', $9::text, 'phase', $10::text,
        'location', $11::text, 'unit', $12::text))),
    hashtext($6))"""
EVENT = """INSERT INTO charger_events (record_id, seq, charge_point_id, kind, occurred_at,
    connector_id, details) VALUES ($1, $2, $3, $4, $5, $6, $7)"""
COMMAND = """INSERT INTO commands (command_id, charge_point_id, action, request, state, outcome,
    created_at, sent_at, completed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"""

# Three sessions: 1 and 3 on CP1 (3 still charging), 2 on CP2, stopped by
# a card whose text a spreadsheet would take for a formula.
TRANSACTIONS = [
    (CP, 1, "TAG1", None, at("2024-01-01T10:00:00Z"), 100, at("2024-01-01T11:00:00Z"), 1100,
     "Local", "TAG1"),
    ("CP2", 2, "TAG2", None, at("2024-01-02T10:00:00Z"), 100, at("2024-01-02T11:00:00Z"), 2600,
     "Remote", "=1+2"),
    (CP, 3, "TAG1", 7, at("2024-01-03T10:00:00Z"), 100, None, None, None, None),
]  # fmt: skip
# Transaction 3's values, written out of order: two records at 10:01 (one
# with two sampled values) and one at 10:02; transaction 1 has one too.
METER_VALUES = [
    ("1704276120000-0", 0, at("2024-01-03T10:02:00Z"), CP, 3, "300", "Sample.Periodic", "Raw",
     "Energy.Active.Import.Register", None, "Outlet", "Wh"),
    ("1704276060000-0", 1, at("2024-01-03T10:01:00Z"), CP, 3, "7.2", "Sample.Periodic", "Raw",
     "Power.Active.Import", "L1", "Outlet", "kW"),
    ("1704276060000-0", 0, at("2024-01-03T10:01:00Z"), CP, 3, "200", "Sample.Periodic", "Raw",
     "Energy.Active.Import.Register", None, "Outlet", "Wh"),
    ("1704103260000-0", 0, at("2024-01-01T10:01:00Z"), CP, 1, "150", None, None, None, None,
     None, None),
]  # fmt: skip
EVENTS = [
    ("1704099600000-0", 0, CP, "boot", at("2024-01-01T09:00:00Z"), None,
     '{"chargePointVendor": "Acme", "chargePointModel": "Fast"}'),
    ("1704099660000-0", 0, CP, "status", at("2024-01-01T09:01:00Z"), 1,
     '{"status": "Available", "errorCode": "NoError"}'),
    ("1704099900000-0", 0, CP, "status", at("2024-01-01T09:05:00Z"), 1,
     '{"status": "Charging", "errorCode": "NoError"}'),
    ("1704099900000-0", 1, CP, "status", at("2024-01-01T09:05:00Z"), 0,
     '{"status": "Available", "errorCode": "NoError"}'),
    ("1704099600000-1", 0, "CP2", "boot", at("2024-01-01T09:00:00Z"), None, "{}"),
]  # fmt: skip
COMMANDS = [
    ("c-1", CP, "Reset", '{"type": "Soft"}', "answered",
     '{"result": {"status": "Accepted"}, "status": "Accepted"}', at("2024-01-01T12:00:00Z"),
     at("2024-01-01T12:00:00.100Z"), at("2024-01-01T12:00:00.350Z")),
    ("c-2", CP, "ClearCache", "{}", "failed",
     '{"error_code": "NotImplemented", "error_description": "no cache"}',
     at("2024-01-01T12:05:00Z"), at("2024-01-01T12:05:00Z"), at("2024-01-01T12:05:01Z")),
    ("c-3", CP, "UnlockConnector", '{"connectorId": 1}', "queued", None,
     at("2024-01-01T12:10:00Z"), None, None),
    ("c-4", "CP2", "Reset", '{"type": "Hard"}', "timed_out", None, at("2024-01-01T12:00:00Z"),
     at("2024-01-01T12:00:00Z"), at("2024-01-01T12:00:30Z")),
]  # fmt: skip


SESSION = """INSERT INTO transactions_v201 (charge_point_id, transaction_id, evse_id, connector_id,
    id_token, id_token_type, id_token_status, started_at, meter_start, stopped_at, meter_stop,
    stopped_reason) VALUES ($1, $2, $3, 1, $4, 'ISO14443', 'Accepted', $5, $6, $7, $8, $9)"""
SESSION_EVENT = """INSERT INTO transaction_events (charge_point_id, transaction_id, seq_no,
    event_type, trigger_reason, occurred_at, offline, charging_state, id_token, record_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, '1706781600000-0')"""
SESSION_METER_VALUE = """INSERT INTO meter_values (record_id, seq, sampled_at, charge_point_id,
    connector_id, transaction_ref, sampled_values, reading_key) VALUES ($1, 0, $2, $3, 1, $4,
    json_build_array(json_build_object('value', $5::text, 'measurand', $6::text)), hashtext($5))"""
# OCPP 2.0.1 sessions: the station's text ids, unique per station only
# ("tx-a" on two), one whose Started has not come yet (no start).
SESSIONS = [
    ("CP201", "tx-a", 1, "TOK1", at("2024-02-01T10:00:00Z"), 1000, at("2024-02-01T11:00:00Z"),
     8500, "EVDisconnected"),
    ("CP201", "tx-b", 2, "TOK2", at("2024-02-02T10:00:00Z"), 0, None, None, None),
    ("CP202", "tx-a", 1, "TOK1", at("2024-02-02T10:00:00Z"), 0, None, None, None),
    ("CP201", "tx-c", None, None, None, None, None, None, None),
]  # fmt: skip
# tx-a on CP201, told backwards as an offline queue would.
SESSION_EVENTS = [
    ("CP201", "tx-a", 2, "Ended", "EVCommunicationLost", at("2024-02-01T11:00:00Z"), True,
     "Idle", None),
    ("CP201", "tx-a", 1, "Updated", "ChargingStateChanged", at("2024-02-01T10:01:00Z"), True,
     "Charging", None),
    ("CP201", "tx-a", 0, "Started", "Authorized", at("2024-02-01T10:00:00Z"), False,
     "EVConnected", "TOK1"),
]  # fmt: skip
SESSION_METER_VALUES = [
    ("1706785200000-0", at("2024-02-01T11:00:00Z"), "CP201", "tx-a", "8500",
     "Energy.Active.Import.Register"),
    ("1706781600000-0", at("2024-02-01T10:00:00Z"), "CP201", "tx-a", "1000",
     "Energy.Active.Import.Register"),
    ("1706781600000-1", at("2024-02-01T10:00:00Z"), "CP202", "tx-a", "0",
     "Energy.Active.Import.Register"),
]  # fmt: skip


async def migrated(url: str) -> None:
    """The schema ``ocpp-archiver migrate`` creates."""
    database = await connect(url)
    try:
        await migrate(database)
        await ensure_partitions(database)
    finally:
        await database.close()


async def write_history(url: str) -> None:
    """Migrate, then the rows above."""
    await migrated(url)
    connection = await asyncpg.connect(url)
    try:
        await connection.executemany(TRANSACTION, TRANSACTIONS)
        await connection.executemany(METER_VALUE, METER_VALUES)
        await connection.executemany(EVENT, EVENTS)
        await connection.executemany(COMMAND, COMMANDS)
        await connection.executemany(SESSION, SESSIONS)
        await connection.executemany(SESSION_EVENT, SESSION_EVENTS)
        await connection.executemany(SESSION_METER_VALUE, SESSION_METER_VALUES)
    finally:
        await connection.close()


def seed_history(url: str) -> None:
    """:func:`write_history`, from synchronous code."""
    asyncio.run(write_history(url))
