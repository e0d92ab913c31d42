"""The baseline: a Python port of the user's Phase 1 ``simple-processor``.

One message at a time: ``BRPOP ocpp:requests``, ``json.loads``, a CALLRESULT
for BootNotification and Heartbeat or a NotImplemented CALLERROR for any
other CALL, ``LPUSH ocpp:responses:{charge_point_id}``. CALLRESULTs and
CALLERRORs from chargers are only acknowledged. No consumer group, no
atomicity, no state: what the project replaces.

The Go original logs three lines per message; the port logs nothing per
message, so it is if anything faster than the original.

Run as ``python -m bench.baseline_brpop`` with ``REDIS_URL`` in the
environment; SIGTERM or SIGINT stops it within a second.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import redis

from bench.baseline_process import Stopping, serve
from processor import keys

log = logging.getLogger("baseline")

# The Go original blocks for one second at a time and checks for shutdown.
BLOCK_S = 1


def rfc3339_now() -> str:
    """``time.Now().Format(time.RFC3339)`` in UTC: seconds, no fraction."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def response_for(envelope: dict[str, Any]) -> list[Any]:
    """The OCPP-J frame answering a CALL, as the Phase 1 processor builds it."""
    message_id = envelope.get("message_id")
    action = envelope.get("action")
    if action == "BootNotification":
        body: dict[str, Any] = {"status": "Accepted", "currentTime": rfc3339_now(), "interval": 300}
        return [3, message_id, body]
    if action == "Heartbeat":
        return [3, message_id, {"currentTime": rfc3339_now()}]
    return [4, message_id, "NotImplemented", "Action not implemented in Phase 1", {}]


def send_response(client: redis.Redis, charge_point_id: str, response: list[Any]) -> None:
    reply = {
        "charge_point_id": charge_point_id,
        "message_type": response[0],
        "message_id": response[1],
        "payload": response,
        "timestamp": rfc3339_now(),
    }
    client.lpush(keys.responses(charge_point_id), json.dumps(reply, separators=(",", ":")))


def handle(client: redis.Redis, raw: bytes) -> None:
    try:
        envelope = json.loads(raw)
    except ValueError:
        log.warning("failed to parse message")
        return
    if not isinstance(envelope, dict):
        log.warning("unexpected message: %r", raw[:80])
        return
    message_type = envelope.get("message_type")
    if message_type == 2:
        send_response(client, str(envelope.get("charge_point_id", "")), response_for(envelope))
    elif message_type not in (3, 4):
        log.warning("unknown message type: %r", message_type)


def run(client: redis.Redis, stopping: Stopping) -> int:
    """Handle messages until SIGTERM or SIGINT; returns how many were popped."""
    handled = 0
    while not stopping.requested:
        try:
            popped: Any = client.brpop([keys.REQUESTS], timeout=BLOCK_S)
        except redis.ConnectionError as exc:
            log.error("redis error: %r", exc)
            time.sleep(5)  # as the Go original does
            continue
        if popped is None:
            continue
        handle(client, popped[1])
        handled += 1
    return handled


def main() -> None:
    serve("baseline", run)


if __name__ == "__main__":
    main()
