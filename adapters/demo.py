"""``ocpp-demo``: the README's first command, the whole stack at work.

Starts a private redis-server (unless ``REDIS_URL`` is set) and a private
PostgreSQL (unless ``DATABASE_URL`` is set), the gateway, the adapter,
three processors, the archiver and the API; pushes the user's Phase 2
messages the way the ws-server does and prints the replies; runs a
simulated fleet of chargers (``ocpp-sim``), half OCPP 1.6 and half 2.0.1,
through the gateway; reads a closed transaction back from PostgreSQL
through the API; sends a RemoteStartTransaction to a simulated 1.6 charger
and a RequestStartTransaction to a simulated 2.0.1 station through the API
and shows their answers; prints a summary; then stops everything with
SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any, cast

import anyio
import redis

from adapters.devstack import PostgresServer, RedisServer, Service, free_port, wait_for
from processor import keys
from processor.command_queue import CommandQueue
from processor.redis_io import connect

CP = "TEST-CP-PHASE2"
# The simulated fleets' versions: half and half, assigned by charger number.
MIXED = "ocpp1.6=0.5,ocpp2.0.1=0.5"


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ocpp-demo", description=__doc__)
    parser.add_argument("--keep", action="store_true",
                        help="leave the stack up after the run (a few simulated chargers "
                        "charging) until Ctrl-C, to look at the operator console")  # fmt: skip
    keep = parser.parse_args(argv).keep
    with ExitStack() as stack:
        url = os.environ.get("REDIS_URL")
        if url is None:
            server = stack.enter_context(RedisServer())
            url = server.url
            print(f"started a private redis-server on port {server.port}")
        else:
            print(f"using REDIS_URL={url}")
        database = os.environ.get("DATABASE_URL")
        if database is None:
            postgres = stack.enter_context(PostgresServer())
            database = postgres.url
            print(f"started a private PostgreSQL on port {postgres.port}")
        else:
            print("using DATABASE_URL")
        client = redis.Redis.from_url(url)
        client.delete(keys.responses(CP))
        # The services' JSON log lines go to a file, not between the replies.
        logs = stack.enter_context(tempfile.NamedTemporaryFile(
            prefix="ocpp-demo-", suffix=".log", delete=False))  # fmt: skip
        gateway_port = free_port()
        # A token of this run's own: the API sends commands to chargers.
        api = Api(free_port(), secrets.token_urlsafe(24))
        services = [
            # Both on loopback: chargers without passwords, a demo's token.
            Service("adapters.gateway", url, env={"OCPP_GATEWAY_PORT": str(gateway_port),
                                                  "OCPP_GATEWAY_HOST": "127.0.0.1"}, log=logs),
            Service("adapters", url, log=logs),
            *[Service("processor", url, log=logs) for _ in range(3)],
            # It applies the schema's migrations before it archives.
            Service("adapters.archiver", url, args=["run"],
                    env={"DATABASE_URL": database, "OCPP_MIGRATE": "true"}, log=logs),
            Service("adapters.api", url, env={"OCPP_API_PORT": str(api.port),
                                              "OCPP_API_HOST": "127.0.0.1",
                                              "OCPP_API_TOKEN": api.token,
                                              "DATABASE_URL": database}, log=logs),
        ]  # fmt: skip
        print("started ocpp-gateway, ocpp-adapter, three ocpp-processor replicas, "
              "ocpp-archiver and ocpp-api")  # fmt: skip
        print(f"the API: http://127.0.0.1:{api.port}/v1 with Authorization: Bearer {api.token}")
        print(f"the operator console: http://127.0.0.1:{api.port}/ (log in with that token)")
        try:
            wait_for(lambda: _http_ok(api.port, "/healthz"), 30, "the API")
            wait_for(lambda: _listening(gateway_port), 30, "the gateway")
            run(client, url)
            fleet(client, url, gateway_port, api)
            if keep:
                keep_up(gateway_port, api)
        finally:
            codes = [s.terminate() for s in services]
            print(f"stopped all services with SIGTERM; exit codes {codes}")
            print(f"their logs (JSON lines): {logs.name}")


def keep_up(gateway_port: int, api: Api) -> None:
    """Leave the stack up, six simulated chargers (half 1.6, half 2.0.1)
    charging now and then, until SIGINT or SIGTERM."""
    sim = subprocess.Popen(
        [sys.executable, "-m", "adapters.sim", "--url", f"ws://127.0.0.1:{gateway_port}",
         "--chargers", "6", "--prefix", "LIVE", "--protocol", MIXED, "--duration", "86400",
         "--rate", "2", "--meter-values", "6", "--json", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    print(f"\nthe stack stays up (KEEP): open http://127.0.0.1:{api.port}/ and log in with "
          f"{api.token}\nsix chargers (LIVE-0001..6) keep charging; Ctrl-C stops everything",
          flush=True)  # fmt: skip
    # Both, explicitly: started in the background, SIGINT may come ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_cleanly)
    try:
        signal.pause()
    except SystemExit:
        pass
    finally:
        # The first stops new sessions; a second ends those in flight.
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(5)
        except subprocess.TimeoutExpired:
            sim.send_signal(signal.SIGTERM)
            sim.wait(30)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


class Api:
    """``ocpp-api`` on loopback, and the bearer token it takes."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token

    def request(self, path: str, body: bytes | None = None, timeout: float = 10) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=body,
            headers={"content-type": "application/json",
                     "authorization": f"Bearer {self.token}"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return json.loads(r.read())


def fleet(client: redis.Redis, url: str, gateway_port: int, api: Api) -> None:
    ws = f"ws://127.0.0.1:{gateway_port}"
    chargers, sessions = 20, 2
    print(f"\nocpp-sim: {chargers} simulated chargers ({MIXED}), {sessions} charging sessions "
          f"each, through the gateway at {ws}")  # fmt: skip
    sim = subprocess.run(
        [sys.executable, "-m", "adapters.sim", "--url", ws, "--chargers", str(chargers),
         "--sessions", str(sessions), "--protocol", MIXED, "--json", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    summary = json.loads(sim.stdout)
    lat = summary["latency_ms"]

    def each(name: str) -> str:
        return ", ".join(f"{p} {t[name]}" for p, t in summary["by_protocol"].items())

    print(f"  chargers            {summary['connected']}/{summary['chargers']} connected "
          f"({each('connected')})")  # fmt: skip
    print(f"  sessions completed  {summary['sessions_completed']} ({each('sessions_completed')})")
    print(f"  messages            {summary['messages_sent']} at {summary['msgs_per_s']:.0f} msg/s, "
          f"{summary['errors']} errors")  # fmt: skip
    print(f"  latency ms          p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  "
          f"p99 {lat['p99']:.1f}  max {lat['max']:.1f}")  # fmt: skip
    closed = sum(1 for k in client.scan_iter(f"{keys.TXN_PREFIX}*") if _closed(client, k))
    ended = sum(
        1
        for k in client.scan_iter(f"{keys.CHARGE_POINT_PREFIX}*:txn:*")
        if client.hexists(k, "ended_at")
    )
    print(f"  transactions closed in Redis: {closed} OCPP 1.6, "
          f"{ended} OCPP 2.0.1 (TransactionEvent Ended)")  # fmt: skip
    history(client, api, closed)

    print("\nThrough the API to simulated chargers that stay online, DEMO-0001 (OCPP 1.6) "
          "and DEMO-0002 (OCPP 2.0.1):")  # fmt: skip
    lingering = subprocess.Popen(
        [sys.executable, "-m", "adapters.sim", "--url", ws, "--chargers", "2", "--prefix", "DEMO",
         "--protocol", MIXED, "--sessions", "0", "--linger", "60", "--json", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    starts = [
        ("DEMO-0001", "RemoteStartTransaction", b'{"idTag": "DEMO-TAG", "connectorId": 1}'),
        ("DEMO-0002", "RequestStartTransaction",
         b'{"idToken": {"idToken": "DEMO-TAG-201", "type": "Central"}, "remoteStartId": 1}'),
    ]  # fmt: skip

    def start(cp: str, action: str, body: bytes) -> None:
        wait_for(lambda: client.sismember(keys.CHARGE_POINTS, cp), 30, cp)
        path = f"/v1/charge-points/{cp}/commands/{action}?wait=10"
        command = api.request(path, body, timeout=20)
        print(f"  POST {path} -> {command['state']}, status {command.get('status')}, "
              f"round trip {command.get('round_trip_ms')} ms")  # fmt: skip

    try:
        for cp, action, body in starts:
            start(cp, action, body)
    finally:
        lingering.send_signal(signal.SIGTERM)
        lingering.wait(30)
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    where = (
        f"sent to {endpoint}"
        if endpoint
        else ("not exported: set OTEL_EXPORTER_OTLP_ENDPOINT (docker compose up runs Jaeger)")
    )
    print(f"\ntraces: {where}")  # fmt: skip


def history(client: redis.Redis, api: Api, closed: int) -> None:
    """A closed transaction and its meter values, read back from PostgreSQL."""
    print("\nhistory in PostgreSQL, through the API (ocpp-archiver wrote it):")

    def archived() -> list[Any]:
        found = api.request(f"/v1/transactions?active=false&limit={max(closed, 1)}")
        return list(found["transactions"])

    wait_for(lambda: len(archived()) >= closed, 30, "the closed transactions in PostgreSQL")
    print(f"  GET /v1/transactions?active=false -> {len(archived())} closed transactions")
    txn = archived()[0]
    detail = api.request(f"/v1/transactions/{txn['transaction_id']}")
    print(f"  GET /v1/transactions/{txn['transaction_id']} -> {detail['charge_point_id']}, "
          f"idTag {detail['id_tag']}, {detail['start_timestamp']} to {detail['stop_timestamp']}, "
          f"{detail['energy_wh']} Wh, stop reason {detail['stop_reason']}")  # fmt: skip
    values = detail["meter_values"]
    print(f"    {len(values)} sampled values, e.g.:")
    for v in values[:3]:
        print(f"      {v['sampled_at']}  {v['measurand'] or 'Energy.Active.Import.Register'}"
              f"  {v['value']} {v['unit'] or 'Wh'}")  # fmt: skip
    pending = client.xpending(keys.HISTORY, keys.ARCHIVERS)["pending"]
    print(f"  history stream: {client.xlen(keys.HISTORY)} entries held, {pending} pending")


def _closed(client: redis.Redis, key: bytes | str) -> bool:
    name = key.decode() if isinstance(key, bytes) else key
    tail = name.removeprefix(keys.TXN_PREFIX)
    return tail.isdigit() and bool(client.hexists(name, "stop_timestamp"))


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
