"""Envelopes as the ws-server writes them, for any test to build input with."""

from __future__ import annotations

import json
from typing import Any


def call(cp: str, mid: str, action: str, payload: Any, protocol: str | None = None) -> bytes:
    """A CALL's envelope; with ``protocol``, the OCPP version our gateway adds."""
    env = {
        "charge_point_id": cp,
        "message_type": 2,
        "message_id": mid,
        "action": action,
        "payload": [2, mid, action, payload],
        "timestamp": "2024-01-01T12:00:00Z",
    }
    if protocol is not None:
        env["protocol"] = protocol
    return json.dumps(env).encode()


def start(cp: str, mid: str, meter: int = 0, connector: int = 1) -> bytes:
    body = {"connectorId": connector, "idTag": "RFID123", "meterStart": meter,
            "timestamp": "2024-01-01T12:00:00Z"}  # fmt: skip
    return call(cp, mid, "StartTransaction", body)
