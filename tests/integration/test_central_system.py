"""The central system end to end: frames pushed onto ``ocpp:requests`` as the
ws-server pushes them, through a real ``ocpp-adapter`` and ``ocpp-processor``
subprocess on a real Redis, replies popped from ``ocpp:responses:{id}``.

Every CALLRESULT is checked against the official OCPP 1.6 confirmation schema
(``tests/integration/schemas.py``) and every valid input against the official
request schema; the Redis state each message leaves is checked against
docs/state.md. The handlers' logic in isolation is tested without Redis in
tests/processor/test_handlers.py.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from adapters.devstack import Service
from processor import history, keys
from processor.types import Context
from processor.v16.messages import DataTransfer, DataTransferResponse
from tests.integration.helpers import collect, no_more_replies
from tests.integration.schemas import (
    assert_invalid_request,
    assert_valid_request,
    call_error,
    call_result,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
REPLY_TIMEOUT = 10.0
HEARTBEAT_INTERVAL = 120
VENDOR = "com.example.echo"
PROCESSOR_ENV = {
    "OCPP_HEARTBEAT_INTERVAL": str(HEARTBEAT_INTERVAL),
    # Short blocking reads, so SIGTERM is answered at once.
    "OCPP_READ_BLOCK_MS": "200",
    "OCPP_DATA_TRANSFER_HANDLERS": f"{VENDOR}=tests.integration.test_central_system:echo_vendor",
    # The processor imports this module for the DataTransfer handler below.
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
}
# Keys of the pipeline itself (and the services' registry of themselves)
# rather than of the central system's state.
PLUMBING = {keys.REQUESTS, keys.INBOUND, keys.INSTANCES, keys.HISTORY}


async def echo_vendor(ctx: Context, req: DataTransfer) -> DataTransferResponse:
    """The DataTransfer handler the processor under test loads for VENDOR."""
    return DataTransferResponse(status="Accepted", data=(req.data or "")[::-1])


# --- time as the system stores it (docs/state.md) ---------------------------


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def stored(text: str) -> str:
    """Fixed-width UTC text, the form every stored timestamp takes."""
    return _dt(text).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch_ms(text: str) -> int:
    return int(_dt(text).timestamp() * 1000)


def wire_now(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def assert_recent(text: str, slack_s: float = 60.0) -> None:
    """``text`` is a time within ``slack_s`` of our clock: the processor's "now"."""
    assert abs((_dt(text) - datetime.now(UTC)).total_seconds()) < slack_s, text


# --- the ws-server's side ----------------------------------------------------


def envelope(
    cp: str, mid: str, action: str, payload: Any, received: str | None = None, **override: Any
) -> bytes:
    """A CALL's envelope as the ws-server writes it; ``override`` replaces or
    adds envelope fields. The payload must be valid by the official schema:
    invalid input is built with :func:`frame_envelope`."""
    assert_valid_request(action, payload)
    env: dict[str, Any] = {
        "charge_point_id": cp,
        "message_type": 2,
        "message_id": mid,
        "action": action,
        "payload": [2, mid, action, payload],
        "timestamp": received or wire_now(),
    }
    env.update(override)
    return json.dumps(env).encode()


def sample(
    ts: str,
    name: str,
    value: str,
    *,
    unit: str = "Wh",
    context: str = "Sample.Periodic",
    txn: int | None = None,
) -> tuple[dict[str, Any], int]:
    """A stored meter sample and its score."""
    member = {
        "timestamp": stored(ts),
        "name": name,
        "value": value,
        "unit": unit,
        "context": context,
        "format": "Raw",
        "transaction_id": txn,
    }
    return member, epoch_ms(ts)


class CentralSystem:
    """The running pipeline, driven as the ws-server drives it."""

    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url, decode_responses=True)
        self.raw = redis.Redis.from_url(url)
        self._ids = itertools.count(1)
        self.dead_expected = False

    def close(self) -> None:
        self.r.close()
        self.raw.close()

    def new_id(self) -> str:
        return f"msg-{next(self._ids)}"

    def push(self, *raws: bytes) -> None:
        """One LPUSH for all of them: they reach the processor in one batch."""
        self.r.lpush(keys.REQUESTS, *raws)

    def replies(self, cp: str, n: int) -> list[dict[str, Any]]:
        got = collect(self.r, [cp], n, REPLY_TIMEOUT)
        assert len(got) == n and no_more_replies(self.r, [cp]), got
        return got

    def send(
        self,
        cp: str,
        action: str,
        payload: Any,
        *,
        mid: str | None = None,
        received: str | None = None,
        **override: Any,
    ) -> str:
        """Push a valid CALL; returns its message id."""
        mid = mid or self.new_id()
        self.push(envelope(cp, mid, action, payload, received, **override))
        return mid

    def call(self, cp: str, action: str, payload: Any, **kw: Any) -> dict[str, Any]:
        """Send a valid CALL and return the confirmation it got."""
        mid = self.send(cp, action, payload, **kw)
        [reply] = self.replies(cp, 1)
        return call_result(reply, action, mid, cp)

    # Reading state back.

    def hash(self, key: str) -> dict[str, str]:
        return self.r.hgetall(key)

    def stream(self, key: str) -> list[dict[str, str]]:
        return [fields for _, fields in self.r.xrange(key)]

    def history(self) -> list[history.Record]:
        """Every record the processors appended for the archiver, in order."""
        entries: Any = self.raw.xrange(keys.HISTORY)
        return [record for _, fields in entries for name, blob in fields.items()
                if not name.startswith(history.LUA_FIELD_PREFIX.encode())
                for record in history.decode(blob)]  # fmt: skip

    def events(self) -> list[dict[str, Any]]:
        """The charger events in history, flattened as an operator reads them."""
        return [{"charge_point_id": r.charge_point_id, "action": r.kind,
                 "occurred_at": r.occurred_at, **r.details}
                for r in self.history() if isinstance(r, history.ChargerEvent)]  # fmt: skip

    def readings(self) -> list[history.MeterReading]:
        return [r for r in self.history() if isinstance(r, history.MeterReading)]

    def state_keys(self) -> set[str]:
        return {
            k
            for k in self.r.scan_iter("ocpp:*")
            if k not in PLUMBING and not k.startswith(keys.RESPONSES_PREFIX)
        }

    def anomalies(self) -> list[dict[str, str]]:
        return self.stream(keys.ANOMALIES)


@pytest.fixture
def launch(redis_db: str) -> Iterator[Callable[..., CentralSystem]]:
    """Start an adapter and a processor (with extra processor settings) on
    the test's emptied Redis; both must exit 0 on SIGTERM afterwards."""
    services: list[Service] = []
    systems: list[CentralSystem] = []

    def start(**env: str) -> CentralSystem:
        services.append(Service("adapters", redis_db))
        services.append(Service("processor", redis_db, env={**PROCESSOR_ENV, **env}))
        systems.append(CentralSystem(redis_db))
        return systems[-1]

    yield start
    codes = [(s.module, s.terminate()) for s in reversed(services)]
    for cs in systems:
        dead = cs.stream(keys.DEAD) if not cs.dead_expected else []
        cs.close()
        assert dead == [], f"unexpected dead letters: {dead}"
    assert all(code == 0 for _, code in codes), codes


@pytest.fixture
def cs(launch: Callable[..., CentralSystem]) -> CentralSystem:
    return launch()


def start_body(tag: str, meter: int, ts: str, connector: int = 1) -> dict[str, Any]:
    return {"connectorId": connector, "idTag": tag, "meterStart": meter, "timestamp": ts}


def status_body(status: str, ts: str | None, connector: int = 1, **extra: str) -> dict[str, Any]:
    body: dict[str, Any] = {"connectorId": connector, "errorCode": "NoError", "status": status}
    if ts is not None:
        body["timestamp"] = ts
    return {**body, **extra}


# --- 1. each charger-initiated operation -------------------------------------


def test_authorize_answers_from_the_list_and_writes_nothing(cs: CentralSystem) -> None:
    cs.r.hset(
        keys.id_tag("TAG-FLEET"),
        mapping={
            "status": "Accepted",
            "expiry_date": "2099-12-31T23:59:59Z",
            "parent_id_tag": "FLEET-1",
        },
    )
    before = cs.state_keys()

    listed = cs.call("CP-AUTH", "Authorize", {"idTag": "TAG-FLEET"})
    info = listed["idTagInfo"]
    assert info["status"] == "Accepted"
    assert info["parentIdTag"] == "FLEET-1"
    assert _dt(info["expiryDate"]) == datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)
    # Not on the list: the default policy accepts it, and says nothing more.
    assert cs.call("CP-AUTH", "Authorize", {"idTag": "STRANGER"}) == {
        "idTagInfo": {"status": "Accepted"}
    }
    # Authorize only reads; the charger is marked seen, as for any message.
    assert cs.state_keys() - {keys.charge_point("CP-AUTH")} == before
    assert set(cs.hash(keys.charge_point("CP-AUTH"))) <= {"last_seen"}
    assert cs.hash(keys.id_tag("TAG-FLEET"))["status"] == "Accepted"


def test_boot_notification_registers_the_charger(cs: CentralSystem) -> None:
    boot = {
        "chargePointVendor": "VendorX",
        "chargePointModel": "ModelY",
        "chargePointSerialNumber": "CPS-1",
        "chargeBoxSerialNumber": "CBS-1",
        "firmwareVersion": "1.2.3",
        "iccid": "8931",
        "imsi": "2620",
        "meterType": "MT",
        "meterSerialNumber": "MS-1",
    }
    reply = cs.call("CP-BOOT", "BootNotification", boot)
    assert reply["status"] == "Accepted"
    assert reply["interval"] == HEARTBEAT_INTERVAL
    assert_recent(reply["currentTime"])

    cp = cs.hash(keys.charge_point("CP-BOOT"))
    stamp = cp.pop("last_boot")
    assert cp.pop("last_seen") == stamp
    assert_recent(stamp)
    # Fixed-width UTC text, microseconds included (docs/state.md).
    assert len(stamp) == len("2024-01-01T12:00:00.000000Z") and stamp.endswith("Z")
    assert cp == {
        "charge_point_vendor": "VendorX",
        "charge_point_model": "ModelY",
        "charge_point_serial_number": "CPS-1",
        "charge_box_serial_number": "CBS-1",
        "firmware_version": "1.2.3",
        "iccid": "8931",
        "imsi": "2620",
        "meter_type": "MT",
        "meter_serial_number": "MS-1",
        "registration_status": "Accepted",
        "protocol": "ocpp1.6",  # the envelope names none: the default
    }
    assert cs.r.smembers(keys.CHARGE_POINTS) == {"CP-BOOT"}

    # A reboot with new firmware updates what it says and the boot time.
    again = cs.call("CP-BOOT", "BootNotification", {**boot, "firmwareVersion": "1.2.4"})
    assert again["status"] == "Accepted"
    after = cs.hash(keys.charge_point("CP-BOOT"))
    assert after["firmware_version"] == "1.2.4"
    assert after["last_boot"] >= stamp


def test_data_transfer_goes_to_the_vendor_handler_or_is_refused(cs: CentralSystem) -> None:
    received = "2024-04-01T09:00:00.000Z"
    unknown = {"vendorId": "com.nobody", "messageId": "Ping", "data": "abc"}
    assert cs.call("CP-DT", "DataTransfer", unknown, received=received) == {
        "status": "UnknownVendorId"
    }
    known = {"vendorId": VENDOR, "data": "hello"}
    assert cs.call("CP-DT", "DataTransfer", known, received=received) == {
        "status": "Accepted",
        "data": "olleh",
    }
    common = {"charge_point_id": "CP-DT", "action": "DataTransfer", "occurred_at": stored(received)}
    assert cs.events() == [
        {**common, "vendor_id": "com.nobody", "message_id": "Ping", "data": "abc"},
        {**common, "vendor_id": VENDOR, "message_id": "", "data": "hello"},
    ]


def test_diagnostics_status_notification_is_recorded(cs: CentralSystem) -> None:
    received = "2024-04-01T09:00:00.000Z"
    body = {"status": "Uploaded"}
    assert cs.call("CP-DIAG", "DiagnosticsStatusNotification", body, received=received) == {}
    assert cs.hash(keys.charge_point("CP-DIAG")) == {
        "diagnostics_status": "Uploaded",
        "diagnostics_status_at": stored(received),
    }
    assert cs.events() == [
        {
            "charge_point_id": "CP-DIAG",
            "action": "DiagnosticsStatusNotification",
            "occurred_at": stored(received),
            "status": "Uploaded",
            "request_id": "",
        }
    ]


def test_firmware_status_notification_is_recorded_newest_wins(cs: CentralSystem) -> None:
    newer, older = "2024-04-01T09:05:00.000Z", "2024-04-01T09:00:00.000Z"
    assert (
        cs.call("CP-FW", "FirmwareStatusNotification", {"status": "Installing"}, received=newer)
        == {}
    )
    # A notification that was queued and arrives late changes no state ...
    assert (
        cs.call("CP-FW", "FirmwareStatusNotification", {"status": "Downloaded"}, received=older)
        == {}
    )
    held = cs.hash(keys.charge_point("CP-FW"))
    assert held.pop("last_seen")  # any message marks it seen
    assert held == {"firmware_status": "Installing", "firmware_status_at": stored(newer)}
    # ... but is still in the event log.
    assert [(e["status"], e["occurred_at"]) for e in cs.events()] == [
        ("Installing", stored(newer)),
        ("Downloaded", stored(older)),
    ]


def test_heartbeat_answers_the_time_and_tolerates_unknown_envelope_fields(
    cs: CentralSystem,
) -> None:
    reply = cs.call("CP-HB", "Heartbeat", {}, ws_server="1.4", extra={"x": [1, 2]})
    assert set(reply) == {"currentTime"}
    assert_recent(reply["currentTime"])
    cp = cs.hash(keys.charge_point("CP-HB"))
    assert set(cp) == {"last_seen"}
    assert_recent(cp["last_seen"])


def test_log_status_notification_is_recorded(cs: CentralSystem) -> None:
    received = "2024-04-01T09:00:00.000Z"
    body = {"status": "Uploading", "requestId": 42}
    assert cs.call("CP-LOG", "LogStatusNotification", body, received=received) == {}
    assert cs.hash(keys.charge_point("CP-LOG")) == {
        "log_status": "Uploading",
        "log_request_id": "42",
        "log_status_at": stored(received),
    }
    [event] = cs.events()
    assert event == {
        "charge_point_id": "CP-LOG",
        "action": "LogStatusNotification",
        "occurred_at": stored(received),
        "status": "Uploading",
        "request_id": "42",
    }


def test_meter_values_are_stored_per_connector(cs: CentralSystem) -> None:
    t1, t2 = "2024-03-01T10:00:00Z", "2024-03-01T10:05:00+00:00"
    body = {
        "connectorId": 2,
        "meterValue": [
            {
                "timestamp": t1,
                "sampledValue": [
                    {
                        "value": "1200.5",
                        "measurand": "Energy.Active.Import.Register",
                        "unit": "Wh",
                        "location": "Outlet",
                    },
                    {
                        "value": "229.8",
                        "measurand": "Voltage",
                        "phase": "L1-N",
                        "unit": "V",
                        "context": "Sample.Clock",
                    },
                ],
            },
            {"timestamp": t2, "sampledValue": [{"value": "1300"}]},
        ],
    }
    assert cs.call("CP-MV", "MeterValues", body) == {}

    energy = "Energy.Active.Import.Register"
    # Every sampled value goes to history as the charger sent it ...
    assert [(r.connector_id, r.sampled_at, json.loads(r.sampled_values))
            for r in cs.readings()] == [
        (2, stored(t1), [
            {"value": "1200.5", "measurand": energy, "unit": "Wh", "location": "Outlet"},
            {"value": "229.8", "measurand": "Voltage", "phase": "L1-N", "unit": "V",
             "context": "Sample.Clock"}]),
        (2, stored(t2), [{"value": "1300"}]),
    ]  # fmt: skip
    # ... and Redis keeps the latest per measurand with its time and unit,
    # the spec's defaults filled in: measurand, unit.
    assert cs.hash(keys.meter_latest("CP-MV", 2)) == {
        "@": stored(t2),
        f"{energy}@Outlet": f"{stored(t1)} Wh 1200.5",
        "Voltage:L1-N": f"{stored(t1)} V 229.8",
        energy: f"{stored(t2)} Wh 1300",
    }
    assert cs.r.smembers(keys.connectors("CP-MV")) == {"2"}
    assert not [k for k in cs.state_keys() if k.startswith(keys.TXN_PREFIX)]
    # Nothing per sample in Redis.
    assert cs.state_keys() <= {keys.connectors("CP-MV"), keys.meter_latest("CP-MV", 2)}


def test_security_event_notification_is_logged_and_a_future_clock_distrusted(
    cs: CentralSystem,
) -> None:
    body = {
        "type": "SettingSystemTime",
        "timestamp": "2024-02-01T08:00:00+01:00",
        "techInfo": "ntp",
    }
    assert cs.call("CP-SEC", "SecurityEventNotification", body) == {}
    received = wire_now()
    future = {"type": "TamperDetectionActivated", "timestamp": wire_now(timedelta(days=2))}
    assert cs.call("CP-SEC", "SecurityEventNotification", future, received=received) == {}

    assert cs.events() == [
        {
            "charge_point_id": "CP-SEC",
            "action": "SecurityEventNotification",
            "type": "SettingSystemTime",
            "occurred_at": "2024-02-01T07:00:00.000000Z",
            "tech_info": "ntp",
        },
        # Two days ahead is past the allowed skew: the receipt time is kept.
        {
            "charge_point_id": "CP-SEC",
            "action": "SecurityEventNotification",
            "type": "TamperDetectionActivated",
            "occurred_at": stored(received),
            "tech_info": "",
        },
    ]
    [anomaly] = cs.anomalies()
    assert anomaly["charge_point_id"] == "CP-SEC"
    assert anomaly["kind"] == "timestamp in the future"
    assert anomaly["timestamp"] == stored(future["timestamp"])


def test_sign_certificate_keeps_the_csr(cs: CentralSystem) -> None:
    csr = "-----BEGIN CERTIFICATE REQUEST-----\nMIIBVjCB/QIBADA=\n-----END CERTIFICATE REQUEST-----"
    received = "2024-04-01T09:00:00.000Z"
    assert cs.call("CP-CSR", "SignCertificate", {"csr": csr}, received=received) == {
        "status": "Accepted"
    }
    assert cs.hash(keys.charge_point("CP-CSR")) == {
        "csr": csr,
        "csr_received_at": stored(received),
    }
    [event] = cs.events()
    assert event["action"] == "SignCertificate" and event["csr"] == csr


def test_signed_firmware_status_notification_is_recorded(cs: CentralSystem) -> None:
    received = "2024-04-01T09:00:00.000Z"
    body = {"status": "SignatureVerified", "requestId": 9}
    assert cs.call("CP-SFW", "SignedFirmwareStatusNotification", body, received=received) == {}
    assert cs.hash(keys.charge_point("CP-SFW")) == {
        "signed_firmware_status": "SignatureVerified",
        "signed_firmware_request_id": "9",
        "signed_firmware_status_at": stored(received),
    }
    [event] = cs.events()
    assert event["action"] == "SignedFirmwareStatusNotification"
    assert (event["status"], event["request_id"]) == ("SignatureVerified", "9")


def test_start_transaction_opens_a_transaction(cs: CentralSystem) -> None:
    ts = "2024-01-01T12:00:00Z"
    body = {**start_body("TAG-S", 1500, ts), "reservationId": 4}
    reply = cs.call("CP-START", "StartTransaction", body)
    assert reply["idTagInfo"] == {"status": "Accepted"}
    tid = reply["transactionId"]
    assert tid == 1

    assert cs.hash(keys.transaction(tid)) == {
        "charge_point_id": "CP-START",
        "connector_id": "1",
        "id_tag": "TAG-S",
        "meter_start": "1500",
        "start_timestamp": stored(ts),
        "reservation_id": "4",
        "id_tag_status": "Accepted",
    }
    assert cs.r.get(keys.TXN_SEQ) == "1"
    assert cs.r.smembers(keys.ACTIVE_TRANSACTIONS) == {"1"}
    assert cs.hash(keys.connector("CP-START", 1)) == {"transaction_id": "1"}
    assert cs.r.smembers(keys.connectors("CP-START")) == {"1"}
    active = keys.id_tag_active("TAG-S")
    assert cs.r.get(active) == "1"
    assert 0 < cs.r.ttl(active) <= 86_400
    [idem] = cs.r.scan_iter(keys.TXN_IDEMPOTENCY_PREFIX + "*")
    assert cs.r.get(idem) == "1"
    assert 0 < cs.r.ttl(idem) <= 7 * 86_400
    assert cs.anomalies() == []


def test_status_notification_keeps_the_connector_status(cs: CentralSystem) -> None:
    ts = "2024-01-01T12:00:00Z"
    body = status_body(
        "Faulted", ts, connector=2, info="ground fault", vendorId="com.v", vendorErrorCode="E42"
    )
    body["errorCode"] = "GroundFailure"
    assert cs.call("CP-SN", "StatusNotification", body) == {}
    assert cs.hash(keys.connector("CP-SN", 2)) == {
        "status": "Faulted",
        "error_code": "GroundFailure",
        "info": "ground fault",
        "vendor_id": "com.v",
        "vendor_error_code": "E42",
        "status_timestamp": stored(ts),
    }
    # Connector 0 is the charger itself; without a timestamp, receipt time counts.
    received = "2024-01-01T12:30:00.250Z"
    cs.call(
        "CP-SN",
        "StatusNotification",
        status_body("Unavailable", None, connector=0),
        received=received,
    )
    assert cs.hash(keys.connector("CP-SN", 0)) == {
        "status": "Unavailable",
        "error_code": "NoError",
        "info": "",
        "vendor_id": "",
        "vendor_error_code": "",
        "status_timestamp": stored(received),
    }
    assert cs.r.smembers(keys.connectors("CP-SN")) == {"0", "2"}


def test_stop_transaction_closes_it_and_notes_unknown_ones(cs: CentralSystem) -> None:
    start = cs.call("CP-STOP", "StartTransaction", start_body("TAG-X", 100, "2024-01-01T12:00:00Z"))
    tid = start["transactionId"]
    stop = {
        "transactionId": tid,
        "meterStop": 2600,
        "timestamp": "2024-01-01T13:00:00Z",
        "reason": "EVDisconnected",
    }
    assert cs.call("CP-STOP", "StopTransaction", stop) == {}
    record = cs.hash(keys.transaction(tid))
    assert {
        k: record[k] for k in ("meter_stop", "stop_timestamp", "stop_reason", "energy_wh", "closed")
    } == {
        "meter_stop": "2600",
        "stop_timestamp": "2024-01-01T13:00:00.000000Z",
        "stop_reason": "EVDisconnected",
        "energy_wh": "2500",
        "closed": "1",
    }
    assert "stop_id_tag" not in record
    assert cs.r.smembers(keys.ACTIVE_TRANSACTIONS) == set()
    assert cs.r.exists(keys.id_tag_active("TAG-X")) == 0

    # A stop for a transaction never seen is still accepted, and noted.
    unknown = {
        "transactionId": 999,
        "meterStop": 5,
        "timestamp": "2024-01-01T13:00:00Z",
        "idTag": "TAG-Y",
    }
    assert cs.call("CP-STOP", "StopTransaction", unknown) == {"idTagInfo": {"status": "Accepted"}}
    [anomaly] = cs.anomalies()
    assert anomaly["kind"] == "StopTransaction for an unknown transaction"
    assert (anomaly["charge_point_id"], anomaly["transaction_id"]) == ("CP-STOP", "999")
    assert cs.r.exists(keys.transaction(999)) == 0


# --- 2. a whole charging session ---------------------------------------------


def test_a_whole_charging_session(cs: CentralSystem) -> None:
    cp, tag = "CP-SESSION", "TAG-SESSION"
    cs.r.hset(keys.id_tag(tag), mapping={"status": "Accepted"})
    energy = "Energy.Active.Import.Register"

    boot = cs.call(cp, "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
    assert boot["status"] == "Accepted"
    cs.call(cp, "StatusNotification", status_body("Available", "2024-06-01T08:00:00Z"))
    assert cs.call(cp, "Authorize", {"idTag": tag}) == {"idTagInfo": {"status": "Accepted"}}
    start = cs.call(cp, "StartTransaction", start_body(tag, 10_000, "2024-06-01T08:01:00Z"))
    assert start["idTagInfo"] == {"status": "Accepted"}
    tid = start["transactionId"]
    cs.call(cp, "StatusNotification", status_body("Charging", "2024-06-01T08:01:05Z"))
    assert cs.hash(keys.connector(cp, 1))["transaction_id"] == str(tid)
    # Tag in use: a second Authorize elsewhere would be refused.
    assert cs.call("CP-ELSEWHERE", "Authorize", {"idTag": tag})["idTagInfo"]["status"] == (
        "ConcurrentTx"
    )

    periodic = [
        ("2024-06-01T08:16:00Z", "12500"),
        ("2024-06-01T08:31:00Z", "15000"),
        ("2024-06-01T08:46:00Z", "17500"),
    ]
    for ts, value in periodic:
        body = {
            "connectorId": 1,
            "transactionId": tid,
            "meterValue": [{"timestamp": ts, "sampledValue": [{"value": value}]}],
        }
        assert cs.call(cp, "MeterValues", body) == {}

    stop = {
        "transactionId": tid,
        "idTag": tag,
        "meterStop": 19_250,
        "timestamp": "2024-06-01T09:00:00Z",
        "reason": "Local",
        "transactionData": [
            {
                "timestamp": "2024-06-01T08:01:00Z",
                "sampledValue": [{"value": "10000", "context": "Transaction.Begin"}],
            },
            {
                "timestamp": "2024-06-01T09:00:00Z",
                "sampledValue": [{"value": "19250", "context": "Transaction.End"}],
            },
        ],
    }
    assert cs.call(cp, "StopTransaction", stop) == {"idTagInfo": {"status": "Accepted"}}
    cs.call(cp, "StatusNotification", status_body("Available", "2024-06-01T09:00:10Z"))

    record = cs.hash(keys.transaction(tid))
    assert record == {
        "charge_point_id": cp,
        "connector_id": "1",
        "id_tag": tag,
        "meter_start": "10000",
        "start_timestamp": stored("2024-06-01T08:01:00Z"),
        "id_tag_status": "Accepted",
        "meter_stop": "19250",
        "stop_timestamp": stored("2024-06-01T09:00:00Z"),
        "stop_reason": "Local",
        "stop_id_tag": tag,
        "energy_wh": "9250",
        "closed": "1",
    }
    # Markers cleared.
    assert cs.r.exists(keys.id_tag_active(tag)) == 0
    connector = cs.hash(keys.connector(cp, 1))
    assert "transaction_id" not in connector
    assert connector["status"] == "Available"
    assert connector["status_timestamp"] == stored("2024-06-01T09:00:10Z")
    assert cs.r.smembers(keys.ACTIVE_TRANSACTIONS) == set()
    # Closed, it stays for late messages, then leaves Redis for history.
    assert 0 < cs.r.ttl(keys.transaction(tid)) <= 7 * 86400
    # Every sample to history, once, with its transaction.
    assert [(r.transaction_id, r.sampled_at, json.loads(r.sampled_values))
            for r in cs.readings()] == [
        *[(tid, stored(ts), [{"value": v}]) for ts, v in periodic],
        (tid, stored("2024-06-01T08:01:00Z"), [{"value": "10000", "context": "Transaction.Begin"}]),
        (tid, stored("2024-06-01T09:00:00Z"), [{"value": "19250", "context": "Transaction.End"}]),
    ]  # fmt: skip
    starts = [r for r in cs.history() if isinstance(r, history.TransactionStarted)]
    stops = [r for r in cs.history() if isinstance(r, history.TransactionStopped)]
    assert starts == [history.TransactionStarted(cp, tid, 1, tag, None,
                                                 stored("2024-06-01T08:01:00Z"), 10_000,
                                                 "Accepted")]  # fmt: skip
    assert stops == [history.TransactionStopped(cp, tid, stored("2024-06-01T09:00:00Z"), 19_250,
                                                "Local", tag)]  # fmt: skip
    latest = cs.hash(keys.meter_latest(cp, 1))
    assert latest[energy] == f"{stored('2024-06-01T09:00:00Z')} Wh 19250"
    assert cs.anomalies() == []
    # The tag is free again.
    assert cs.call("CP-ELSEWHERE", "Authorize", {"idTag": tag}) == {
        "idTagInfo": {"status": "Accepted"}
    }


# --- 3. duplicates, late and out-of-order messages ---------------------------


def test_start_transaction_retries_get_the_same_transaction(cs: CentralSystem) -> None:
    cp, body = "CP-DUP", start_body("TAG-D", 700, "2024-01-01T12:00:00Z")
    # Redelivered under the same message id, twice in one batch ...
    raw = envelope(cp, "start-1", "StartTransaction", body)
    cs.push(raw, raw)
    first = [call_result(r, "StartTransaction", "start-1", cp) for r in cs.replies(cp, 2)]
    # ... and retried later under a new message id.
    retry = cs.call(cp, "StartTransaction", body)
    tids = {r["transactionId"] for r in [*first, retry]}
    assert len(tids) == 1
    [tid] = tids
    assert all(r["idTagInfo"] == {"status": "Accepted"} for r in [*first, retry])
    assert cs.r.get(keys.TXN_SEQ) == "1"
    assert cs.r.smembers(keys.ACTIVE_TRANSACTIONS) == {str(tid)}
    records = [
        k
        for k in cs.state_keys()
        if k.startswith(keys.TXN_PREFIX) and k.removeprefix(keys.TXN_PREFIX).isdigit()
    ]
    assert records == [keys.transaction(tid)]
    # Another start is another transaction.
    other = cs.call(cp, "StartTransaction", start_body("TAG-E", 0, "2024-01-01T12:10:00Z", 2))
    assert other["transactionId"] != tid
    assert cs.r.get(keys.TXN_SEQ) == "2"


def test_meter_values_sent_twice_are_stored_once(cs: CentralSystem) -> None:
    cp = "CP-MVDUP"
    tid = cs.call(cp, "StartTransaction", start_body("TAG-M", 0, "2024-01-01T12:00:00Z"))[
        "transactionId"
    ]
    newer, older = "2024-01-01T12:30:00Z", "2024-01-01T12:15:00Z"
    body = {
        "connectorId": 1,
        "transactionId": tid,
        "meterValue": [
            {
                "timestamp": newer,
                "sampledValue": [
                    {"value": "3000"},
                    {"value": "16", "measurand": "Current.Import", "unit": "A"},
                ],
            }
        ],
    }
    raw = envelope(cp, "mv-1", "MeterValues", body)
    cs.push(raw, raw)  # redelivered in one batch
    for reply in cs.replies(cp, 2):
        assert call_result(reply, "MeterValues", "mv-1", cp) == {}
    assert cs.call(cp, "MeterValues", body) == {}  # retried under a new id
    # Three messages, three records: the archiver's content key makes them
    # one row each (tests/adapters/archiver).
    assert len(cs.readings()) == 3
    latest = cs.hash(keys.meter_latest(cp, 1))

    # A reading queued offline arrives late: stored, but the latest stays.
    late = {
        "connectorId": 1,
        "transactionId": tid,
        "meterValue": [{"timestamp": older, "sampledValue": [{"value": "1500"}]}],
    }
    assert cs.call(cp, "MeterValues", late) == {}
    assert cs.readings()[-1].sampled_values == b'[{"value":"1500"}]'
    assert cs.hash(keys.meter_latest(cp, 1)) == latest


def test_an_older_status_notification_does_not_overwrite_a_newer_one(cs: CentralSystem) -> None:
    cp = "CP-ORDER"
    cs.call(cp, "StatusNotification", status_body("Charging", "2024-01-01T12:00:00Z"))
    # 13:00 at +02:00 is 11:00 UTC: older, though it reads as a larger string.
    cs.call(
        cp,
        "StatusNotification",
        status_body("Available", "2024-01-01T13:00:00+02:00", info="queued"),
    )
    cs.call(cp, "StatusNotification", status_body("Preparing", "2024-01-01T11:59:59Z"))
    connector = cs.hash(keys.connector(cp, 1))
    assert (connector["status"], connector["status_timestamp"], connector["info"]) == (
        "Charging",
        stored("2024-01-01T12:00:00Z"),
        "",
    )
    # Out of order within one batch too.
    cs.push(
        envelope(
            cp, "sn-new", "StatusNotification", status_body("Finishing", "2024-01-01T12:20:00Z")
        ),
        envelope(
            cp, "sn-old", "StatusNotification", status_body("Faulted", "2024-01-01T12:10:00Z")
        ),
    )
    got = {r["message_id"]: r for r in cs.replies(cp, 2)}
    for mid, reply in got.items():
        assert call_result(reply, "StatusNotification", mid, cp) == {}
    connector = cs.hash(keys.connector(cp, 1))
    assert (connector["status"], connector["status_timestamp"]) == (
        "Finishing",
        stored("2024-01-01T12:20:00Z"),
    )


def test_a_repeated_stop_keeps_the_first_and_is_no_anomaly(cs: CentralSystem) -> None:
    cp = "CP-STOP2"
    tid = cs.call(cp, "StartTransaction", start_body("TAG-R", 1000, "2024-01-01T12:00:00Z"))[
        "transactionId"
    ]
    stop = {
        "transactionId": tid,
        "meterStop": 4000,
        "timestamp": "2024-01-01T13:00:00Z",
        "idTag": "TAG-R",
        "reason": "Local",
        "transactionData": [
            {"timestamp": "2024-01-01T13:00:00Z", "sampledValue": [{"value": "4000"}]}
        ],
    }
    first = cs.call(cp, "StopTransaction", stop)
    closed = cs.hash(keys.transaction(tid))
    # The charger did not get our answer and sends it again: same batch, then later.
    raw = envelope(cp, "stop-again", "StopTransaction", stop)
    cs.push(raw, raw)
    again = [call_result(r, "StopTransaction", "stop-again", cp) for r in cs.replies(cp, 2)]
    again.append(cs.call(cp, "StopTransaction", stop))
    assert all(r == first == {"idTagInfo": {"status": "Accepted"}} for r in again)
    assert cs.hash(keys.transaction(tid)) == closed
    assert closed["energy_wh"] == "3000"
    # One stop in history: the repeats closed nothing.
    assert len([r for r in cs.history() if isinstance(r, history.TransactionStopped)]) == 1
    assert cs.anomalies() == []

    # A different second stop is accepted, noted, and changes nothing.
    other = {"transactionId": tid, "meterStop": 9000, "timestamp": "2024-01-01T14:00:00Z"}
    assert cs.call(cp, "StopTransaction", other) == {}
    assert cs.hash(keys.transaction(tid)) == closed
    [anomaly] = cs.anomalies()
    assert anomaly["kind"] == "StopTransaction for a closed transaction"
    assert (anomaly["transaction_id"], anomaly["meter_stop"]) == (str(tid), "9000")


def test_a_different_stop_in_the_same_batch_is_an_anomaly(cs: CentralSystem) -> None:
    cp = "CP-STOP3"
    tid = cs.call(cp, "StartTransaction", start_body("TAG-Q", 0, "2024-01-01T12:00:00Z"))[
        "transactionId"
    ]
    first = {"transactionId": tid, "meterStop": 100, "timestamp": "2024-01-01T13:00:00Z"}
    second = {"transactionId": tid, "meterStop": 900, "timestamp": "2024-01-01T14:00:00Z"}
    cs.push(
        envelope(cp, "stop-a", "StopTransaction", first),
        envelope(cp, "stop-b", "StopTransaction", second),
    )
    for reply in cs.replies(cp, 2):
        assert call_result(reply, "StopTransaction", reply["message_id"], cp) == {}
    record = cs.hash(keys.transaction(tid))
    assert (record["meter_stop"], record["energy_wh"]) == ("100", "100")
    # docs/state.md: "the first stop is kept; a different second stop is an anomaly".
    assert [a["kind"] for a in cs.anomalies()] == ["StopTransaction for a closed transaction"]


def test_the_authorization_list_refuses_blocked_expired_and_busy_tags(cs: CentralSystem) -> None:
    cs.r.hset(keys.id_tag("TAG-BLOCKED"), mapping={"status": "Blocked"})
    cs.r.hset(
        keys.id_tag("TAG-OLD"),
        mapping={"status": "Accepted", "expiry_date": "2020-01-01T00:00:00Z"},
    )
    cs.r.hset(keys.id_tag("TAG-BUSY"), mapping={"status": "Accepted"})

    def authorize(tag: str, cp: str = "CP-B") -> dict[str, Any]:
        info: dict[str, Any] = cs.call(cp, "Authorize", {"idTag": tag})["idTagInfo"]
        return info

    assert authorize("TAG-BLOCKED") == {"status": "Blocked"}
    expired = authorize("TAG-OLD")
    assert expired["status"] == "Expired"
    assert _dt(expired["expiryDate"]) == datetime(2020, 1, 1, tzinfo=UTC)
    assert authorize("TAG-BUSY") == {"status": "Accepted"}

    busy = cs.call("CP-A", "StartTransaction", start_body("TAG-BUSY", 0, "2024-01-01T12:00:00Z"))
    assert busy["idTagInfo"] == {"status": "Accepted"}
    assert authorize("TAG-BUSY") == {"status": "ConcurrentTx"}

    # The charger starts anyway whatever it is told; the record keeps what it was told.
    ts = "2024-01-01T12:05:00Z"
    for tag, status in [
        ("TAG-BUSY", "ConcurrentTx"),
        ("TAG-BLOCKED", "Blocked"),
        ("TAG-OLD", "Expired"),
    ]:
        connector = {"TAG-BUSY": 1, "TAG-BLOCKED": 2, "TAG-OLD": 3}[tag]
        reply = cs.call("CP-B", "StartTransaction", start_body(tag, 0, ts, connector))
        assert reply["idTagInfo"]["status"] == status
        assert reply["transactionId"] != busy["transactionId"]
        assert cs.hash(keys.transaction(reply["transactionId"]))["id_tag_status"] == status
    # The busy tag still belongs to its first transaction.
    assert cs.r.get(keys.id_tag_active("TAG-BUSY")) == str(busy["transactionId"])


def test_a_tag_not_on_the_list_is_also_refused_a_second_concurrent_transaction(
    cs: CentralSystem,
) -> None:
    first = cs.call("CP-A", "StartTransaction", start_body("WALK-IN", 0, "2024-01-01T12:00:00Z"))
    assert first["idTagInfo"] == {"status": "Accepted"}
    # README: OCPP_ALLOW_CONCURRENT_TX=false (the default) means one idTag
    # does not charge in several transactions at once, else ConcurrentTx.
    assert cs.call("CP-B", "Authorize", {"idTag": "WALK-IN"}) == {
        "idTagInfo": {"status": "ConcurrentTx"}
    }


def test_an_overlong_parent_id_tag_written_by_hand_gives_no_invalid_reply(
    cs: CentralSystem,
) -> None:
    cs.r.hset(keys.id_tag("TAG-P"), mapping={"status": "Accepted", "parent_id_tag": "P" * 30})
    # call() checks the reply against AuthorizeResponse.json (parentIdTag: maxLength 20).
    info = cs.call("CP-P", "Authorize", {"idTag": "TAG-P"})["idTagInfo"]
    assert info["status"] in {"Accepted", "Invalid"}


# --- 4. errors and garbage ---------------------------------------------------


def frame_envelope(cp: str, mid: str, frame: list[Any], **override: Any) -> bytes:
    """An envelope around an arbitrary frame (the ws-server forwards anything)."""
    env: dict[str, Any] = {
        "charge_point_id": cp,
        "message_type": frame[0],
        "message_id": mid,
        "payload": frame,
        "timestamp": wire_now(),
    }
    if len(frame) > 2 and isinstance(frame[2], str):
        env["action"] = frame[2]
    env.update(override)
    return json.dumps(env).encode()


@dataclass(frozen=True)
class Bad:
    """A frame a charger sends, the envelope fields the ws-server got wrong,
    and the OCPP-J error code it deserves."""

    mid: str
    frame: list[Any]
    code: str
    envelope: dict[str, Any] = field(default_factory=dict)

    @property
    def payload_error(self) -> bool:
        """The frame is a well-formed CALL; the payload is what is wrong."""
        return len(self.frame) == 4 and self.code in {
            "FormationViolation",
            "PropertyConstraintViolation",
            "OccurenceConstraintViolation",
            "TypeConstraintViolation",
        }


def bad_call(mid: str, action: str, payload: Any, code: str, /, **envelope: Any) -> Bad:
    return Bad(mid, [2, mid, action, payload], code, envelope)


ERROR_CASES = [
    bad_call("fv-array", "Heartbeat", [], "FormationViolation"),
    bad_call("fv-text", "BootNotification", "hello", "FormationViolation"),
    bad_call("fv-unknown-field", "Heartbeat", {"beat": 1}, "FormationViolation"),
    Bad("fv-short", [2, "fv-short", "Heartbeat"], "FormationViolation"),
    Bad("fv-long", [2, "fv-long", "Heartbeat", {}, {}], "FormationViolation"),
    bad_call("pe-id", "Heartbeat", {}, "ProtocolError", message_id="pe-envelope"),
    bad_call("pe-action", "Heartbeat", {}, "ProtocolError", action="Authorize"),
    bad_call("pcv-long", "Authorize", {"idTag": "T" * 21}, "PropertyConstraintViolation"),
    bad_call(
        "pcv-enum", "StatusNotification", status_body("Broken", None), "PropertyConstraintViolation"
    ),
    bad_call("ocv", "BootNotification", {"chargePointVendor": "V"}, "OccurenceConstraintViolation"),
    bad_call(
        "tcv-str",
        "StartTransaction",
        {**start_body("T", 0, "2024-01-01T12:00:00Z"), "connectorId": "1"},
        "TypeConstraintViolation",
    ),
    bad_call("tcv-int", "Authorize", {"idTag": 12345}, "TypeConstraintViolation"),
    bad_call("ni", "FlyToTheMoon", {}, "NotImplemented"),
    bad_call("ns-reset", "Reset", {"type": "Hard"}, "NotSupported"),
    bad_call("ns-remote", "RemoteStartTransaction", {"idTag": "T"}, "NotSupported"),
]


def test_each_error_code_is_answered_as_a_callerror(
    cs: CentralSystem, subtests: pytest.Subtests
) -> None:
    cp = "CP-ERR"
    cs.push(*[frame_envelope(cp, bad.mid, bad.frame, **bad.envelope) for bad in ERROR_CASES])
    replies = {r["message_id"]: r for r in cs.replies(cp, len(ERROR_CASES))}
    # Each answered under the id in its frame, which is what the charger reads.
    assert set(replies) == {bad.mid for bad in ERROR_CASES}

    for bad in ERROR_CASES:
        with subtests.test(msg=bad.mid, code=bad.code):
            if bad.payload_error:
                # The official schema refuses the payload too.
                assert_invalid_request(bad.frame[2], bad.frame[3])
            elif bad.code == "NotSupported":
                # A good request, only sent in the wrong direction.
                assert_valid_request(bad.frame[2], bad.frame[3])
            code, description = call_error(replies[bad.mid], bad.mid, cp)
            assert code == bad.code, description
            if code.startswith("Not"):
                # Named in the description, as in CONTRACT.md's example.
                assert bad.frame[2] in description
    # A refused CALL changes nothing; nothing was dead-lettered (checked at teardown).
    assert cs.state_keys() == set()


def test_garbage_is_dead_lettered_unanswered(cs: CentralSystem) -> None:
    cs.dead_expected = True
    cp = "CP-GARBAGE"
    garbage = [
        b'{"charge_point_id": "CP-GARBAGE", "message_type": 2, "message_id": "g1", ',  # cut
        b"\xff\xfe\x00not even utf-8",
        b'[2, "g2", "Heartbeat", {}]',  # a frame without its envelope
        # An envelope that names no charger.
        json.dumps(
            {
                "message_type": 2,
                "message_id": "g3",
                "action": "Heartbeat",
                "payload": [2, "g3", "Heartbeat", {}],
            }
        ).encode(),
        frame_envelope(cp, "g4", [3, "g4"]),  # a malformed reply is never answered
    ]
    cs.push(*garbage)
    # The fence: a good CALL behind the garbage is answered once all of it is handled.
    assert set(cs.call(cp, "Heartbeat", {})) == {"currentTime"}

    dead = [fields for _, fields in cs.raw.xrange(keys.DEAD)]
    assert [d[b"envelope"] for d in dead] == garbage
    assert all(d[b"reason"].strip() and d[b"entry_id"] and d[b"consumer"] for d in dead), dead
    assert b"JSON" in dead[0][b"reason"]
    # No reply to any of it: the only reply list is the fence's, now empty.
    assert list(cs.r.scan_iter(keys.RESPONSES_PREFIX + "*")) == []
    [group] = cs.r.xinfo_groups(keys.INBOUND)
    assert group["pending"] == 0


# --- 5. processor settings ---------------------------------------------------


@pytest.mark.parametrize("unknown_status", ["Pending", "Rejected"])
def test_known_only_registration(
    launch: Callable[..., CentralSystem], redis_db: str, unknown_status: str
) -> None:
    with redis.Redis.from_url(redis_db) as r:
        r.sadd(keys.KNOWN_CHARGE_POINTS, "CP-KNOWN")
    env = {"OCPP_REGISTRATION_POLICY": "known-only"}
    if unknown_status != "Pending":  # Pending is the default
        env["OCPP_UNKNOWN_CHARGER_STATUS"] = unknown_status
    cs = launch(**env)
    boot = {"chargePointVendor": "V", "chargePointModel": "M"}
    known = cs.call("CP-KNOWN", "BootNotification", boot)
    stranger = cs.call("CP-STRANGER", "BootNotification", boot)
    assert known["status"] == "Accepted"
    assert stranger["status"] == unknown_status
    # Not accepted still says when to try again.
    assert stranger["interval"] == known["interval"] == HEARTBEAT_INTERVAL
    assert cs.hash(keys.charge_point("CP-KNOWN"))["registration_status"] == "Accepted"
    assert cs.hash(keys.charge_point("CP-STRANGER"))["registration_status"] == unknown_status
    # Both booted; only the operator writes the allow-list.
    assert cs.r.smembers(keys.CHARGE_POINTS) == {"CP-KNOWN", "CP-STRANGER"}
    assert cs.r.smembers(keys.KNOWN_CHARGE_POINTS) == {"CP-KNOWN"}


def test_known_only_refuses_a_stranger_its_transaction(
    launch: Callable[..., CentralSystem], redis_db: str
) -> None:
    with redis.Redis.from_url(redis_db) as r:
        r.sadd(keys.KNOWN_CHARGE_POINTS, "CP-KNOWN")
    cs = launch(OCPP_REGISTRATION_POLICY="known-only")
    body = start_body("TAG-K", 0, "2024-01-01T12:00:00Z")
    mid = cs.send("CP-STRANGER", "StartTransaction", body)
    [reply] = cs.replies("CP-STRANGER", 1)
    code, description = call_error(reply, mid, "CP-STRANGER")
    assert code == "SecurityError"
    assert "CP-STRANGER" in description and "allow-list" in description
    # Nothing opened: no transactionId allocated, no state, nothing for history.
    assert cs.state_keys() == {keys.KNOWN_CHARGE_POINTS}
    assert not any(isinstance(r, history.TransactionStarted) for r in cs.history())
    # The known charger's start gets the first transactionId.
    known = cs.call("CP-KNOWN", "StartTransaction", body)
    assert known["idTagInfo"] == {"status": "Accepted"} and known["transactionId"] == 1
    assert cs.hash(keys.transaction(1))["charge_point_id"] == "CP-KNOWN"


def test_unknown_id_tags_invalid(launch: Callable[..., CentralSystem]) -> None:
    cs = launch(OCPP_UNKNOWN_ID_TAG="Invalid")
    cs.r.hset(keys.id_tag("TAG-LISTED"), mapping={"status": "Accepted"})
    assert cs.call("CP-I", "Authorize", {"idTag": "STRANGER"}) == {
        "idTagInfo": {"status": "Invalid"}
    }
    assert cs.call("CP-I", "Authorize", {"idTag": "TAG-LISTED"}) == {
        "idTagInfo": {"status": "Accepted"}
    }
    start = cs.call("CP-I", "StartTransaction", start_body("STRANGER", 0, "2024-01-01T12:00:00Z"))
    assert start["idTagInfo"] == {"status": "Invalid"}
    assert cs.hash(keys.transaction(start["transactionId"]))["id_tag_status"] == "Invalid"
