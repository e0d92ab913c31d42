"""``ocpp-demo``: the README's first command.

Starts a private redis-server (unless ``REDIS_URL`` is set), the adapter and
two processors; pushes the user's Phase 2 messages the way the ws-server
does; prints the replies; sends a RemoteStartTransaction and shows the
charger's answer matched to it; then stops everything with SIGTERM.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import ExitStack
from typing import Any, cast

import anyio
import redis

from adapters.devstack import RedisServer, Service
from processor import keys
from processor.command_queue import CommandQueue
from processor.redis_io import connect

CP = "TEST-CP-PHASE2"


def frame(mid: str, action: str, payload: dict[str, Any]) -> bytes:
    return json.dumps(
        {"charge_point_id": CP, "message_type": 2, "message_id": mid, "action": action,
         "payload": [2, mid, action, payload], "timestamp": "2024-01-01T12:00:00Z"}
    ).encode()  # fmt: skip


MESSAGES = [
    frame("boot-test", "BootNotification",
          {"chargePointVendor": "TestVendor", "chargePointModel": "TestModel"}),
    frame("start-test", "StartTransaction",
          {"connectorId": 1, "idTag": "RFID123", "meterStart": 0,
           "timestamp": "2024-01-01T12:00:00Z"}),
    frame("heartbeat-test", "Heartbeat", {}),
    frame("stop-test", "StopTransaction",
          {"transactionId": 1, "meterStop": 1200, "timestamp": "2024-01-01T13:00:00Z"}),
    frame("unknown-test", "FooBar", {}),
    frame("bad-test", "BootNotification", {"chargePointVendor": "TestVendor"}),
]  # fmt: skip


def show(label: str, raw: bytes) -> None:
    print(f"  {label:<22} {raw.decode()}")


def pop(client: redis.Redis, key: str, timeout: float = 10) -> bytes:
    got = client.brpop([key], timeout=timeout)
    if got is None:
        sys.exit(f"no reply on {key} within {timeout}s")
    # decode_responses is off: redis-py's str | bytes is always bytes here.
    return cast(bytes, got[1])


def main() -> None:
    with ExitStack() as stack:
        url = os.environ.get("REDIS_URL")
        if url is None:
            server = stack.enter_context(RedisServer())
            url = server.url
            print(f"started a private redis-server on port {server.port}")
        else:
            print(f"using REDIS_URL={url}")
        client = redis.Redis.from_url(url)
        client.delete(keys.responses(CP))
        # The services' JSON log lines go to a file, not between the replies.
        logs = stack.enter_context(tempfile.NamedTemporaryFile(
            prefix="ocpp-demo-", suffix=".log", delete=False))  # fmt: skip
        services = [Service("adapters", url, log=logs)]
        services += [Service("processor", url, log=logs) for _ in range(2)]
        print(f"started ocpp-adapter and two ocpp-processor replicas "
              f"(pids {' '.join(str(s.pid) for s in services)})")  # fmt: skip
        try:
            run(client, url)
        finally:
            codes = [s.terminate() for s in services]
            print(f"stopped all services with SIGTERM; exit codes {codes}")
            print(f"their logs (JSON lines): {logs.name}")


def run(client: redis.Redis, url: str) -> None:
    print(f"\nLPUSH {keys.REQUESTS}, as the ws-server does, then the replies:")
    for raw in MESSAGES:
        client.lpush(keys.REQUESTS, raw)
        show(json.loads(raw)["message_id"], pop(client, keys.responses(CP)))

    print("\nRemoteStartTransaction sent to the charger (what the ws-server pops):")
    command_id = anyio.run(remote_start, url)
    show("CALL", pop(client, keys.responses(CP)))
    answer = json.dumps({"charge_point_id": CP, "message_type": 3, "message_id": command_id,
                         "payload": [3, command_id, {"status": "Accepted"}],
                         "timestamp": "2024-01-01T12:00:01Z"}).encode()  # fmt: skip
    client.lpush(keys.REQUESTS, answer)
    show("charger answers", answer)
    record = anyio.run(wait_for_outcome, url, command_id)
    print(f"  matched to its command by whichever replica took it: {keys.command(command_id)}")
    for name in ("action", "state", "status", "result", "round_trip_ms"):
        print(f"    {name:<14} {record.get(name)}")
    print(f"\ndead letters: {client.xlen(keys.DEAD)}, "
          f"transactions allocated: {int(client.get(keys.TXN_SEQ) or 0)}")  # fmt: skip


async def remote_start(url: str) -> str:
    r = connect(url)
    try:
        record = await CommandQueue(r).send(CP, "RemoteStartTransaction", b'{"idTag":"RFID123"}')
        return record.command_id
    finally:
        await r.aclose()


async def wait_for_outcome(url: str, command_id: str) -> dict[str, str]:
    r = connect(url)
    try:
        record = await CommandQueue(r).wait(command_id, timeout_s=10)
    finally:
        await r.aclose()
    if record is None or record.state not in ("answered", "failed"):
        sys.exit(f"command {command_id} got no answer: {record}")
    return record.fields


if __name__ == "__main__":
    main()
