"""Replicas on one host started as the README says, by hand or as systemd
units would: the console scripts with ``REDIS_URL`` and nothing else, so
every processor wants health port 9101 and every adapter 9102. None may die
for it, each must be found in ``ocpp:instances``, and every processor must
take its share of the work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from adapters.devstack import Service, free_port, listening, wait_for
from processor import keys
from processor.instances import Instance, now_ms, sort_out
from tests.integration.helpers import collect, no_more_replies, push
from tests.messages import call

pytestmark = pytest.mark.slow

TIMEOUT = 20.0
CPS = [f"REPLICA-{i}" for i in range(20)]
ROUND = 600  # Heartbeats a round: more than one batch (256), so replicas share it


class AsUserRuns(Service):
    """``ocpp-processor &``: the console script beside this interpreter, with
    no ``OCPP_*`` variable, whatever this test run has in its environment."""

    def __init__(self, script: str, redis_url: str, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OCPP_")}
        env["REDIS_URL"] = redis_url
        self.module = script
        self.health_port = 0  # not known beforehand: ocpp:instances says
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen([str(Path(sys.executable).parent / script)],
                                            env=env, stdout=out, stderr=out)  # fmt: skip

    def said(self) -> list[str]:
        """Its log lines' messages; a line that is not JSON (what SystemExit
        prints) as it is."""
        return [_message(line) for line in self.log.read_text().splitlines()]


def _message(line: str) -> str:
    try:
        return str(json.loads(line)["message"])
    except (ValueError, KeyError, TypeError):
        return line


def registered(client: redis.Redis, replicas: list[AsUserRuns]) -> dict[int, Instance]:
    """The live instances by pid, once every replica is among them."""
    found: dict[int, Instance] = {}

    def all_in() -> bool:
        dead = [r for r in replicas if not r.alive()]
        assert not dead, [(r.module, r.said()) for r in dead]
        live, _ = sort_out(client.hgetall(keys.INSTANCES), now_ms())  # type: ignore[arg-type]
        found.update((i.pid, i) for i in live)
        return all(r.pid in found for r in replicas)

    wait_for(all_in, TIMEOUT, "every replica in ocpp:instances", interval=0.05)
    return found


def probes_answer(http: httpx.Client, instance: Instance) -> bool:
    try:
        live = http.get(f"{instance.health_url}/livez")
        ready = http.get(f"{instance.health_url}/readyz")
    except httpx.TransportError:
        return False
    assert live.json() == {"alive": True}
    return ready.status_code == 200 and ready.json() == {"ready": True}


def have_read(client: redis.Redis) -> set[str]:
    """The consumers of the group that were delivered entries. Redis 7.2+
    lists a consumer from its first XREADGROUP and says how long since it
    last got entries (``inactive``, -1: never); 7.0 lists it only once it
    got some."""
    consumers: list[dict[str, Any]] = client.xinfo_consumers(keys.INBOUND, keys.GROUP)
    return {c["name"].decode() for c in consumers if c.get("inactive", 0) != -1}


def test_replicas_on_one_host_all_run_and_share_the_work(redis_db: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_db)
    processors = [AsUserRuns("ocpp-processor", redis_db, tmp_path / f"p{i}.log") for i in range(3)]
    adapters = [AsUserRuns("ocpp-adapter", redis_db, tmp_path / f"a{i}.log") for i in range(2)]
    replicas = processors + adapters
    try:
        found = registered(client, replicas)
        by_service = {"processor": processors, "adapter": adapters}
        with httpx.Client(timeout=5, trust_env=False) as http:
            for service, default in (("processor", 9101), ("adapter", 9102)):
                mine = [found[r.pid] for r in by_service[service]]
                assert all(i.service == service for i in mine)
                ports = [urlsplit(i.health_url).port for i in mine]
                assert len(set(ports)) == len(ports), ports
                # The default port is free or not on this machine: at most
                # one has it, and each other one says why it has another.
                assert ports.count(default) <= 1, ports
                for replica, port in zip(by_service[service], ports, strict=True):
                    if port != default:
                        assert any(f"health port {default} is taken" in m
                                   for m in replica.said()), replica.said()  # fmt: skip
                for instance in mine:
                    wait_for(lambda i=instance: probes_answer(http, i), TIMEOUT,
                             f"{instance.field} to answer on {instance.health_url}")  # fmt: skip
        consumers = {found[p.pid].consumer for p in processors}
        assert len(consumers) == 3 and "" not in consumers

        # Rounds of Heartbeats, each answered in full, until every processor
        # has been delivered some.
        sent: list[str] = []
        replies: list[dict[str, Any]] = []
        deadline = time.monotonic() + TIMEOUT
        while have_read(client) != consumers:
            assert time.monotonic() < deadline, f"only {have_read(client)} of {consumers} read"
            ids = [f"hb{len(sent) + i}" for i in range(ROUND)]
            push(client, *[call(CPS[i % len(CPS)], m, "Heartbeat", {}) for i, m in enumerate(ids)])
            sent += ids
            replies += collect(client, CPS, ROUND, timeout=TIMEOUT)
        assert all(r.alive() for r in replicas)
    finally:
        codes = [(r.module, r.terminate()) for r in replicas]
    assert all(code == 0 for _, code in codes), codes
    # Exactly one reply each, and no more after.
    assert Counter(r["message_id"] for r in replies) == Counter(sent)
    assert no_more_replies(client, CPS)
    # Each processor handled some, and together all of them.
    handled = {}
    for p in processors:
        [last] = [m for m in p.said() if " stopped after " in m]
        handled[p.pid] = int(last.split(" stopped after ")[1].split()[0])
    assert all(n > 0 for n in handled.values()) and sum(handled.values()) == len(sent), handled
    # Each took itself out of the registry as it stopped.
    assert client.hgetall(keys.INSTANCES) == {}
    client.close()


def test_a_second_gateway_stops_for_its_chargers_port_not_its_health_port(
    redis_db: str, tmp_path: Path
) -> None:
    """Chargers must know where to connect, so a second gateway on the same
    WebSocket port cannot run; it says so in one line. Both want health port
    9103: that is not what stops it."""
    env = {"OCPP_GATEWAY_HOST": "127.0.0.1", "OCPP_GATEWAY_PORT": str(free_port()),
           "OCPP_HEALTH_PORT": "9103"}  # fmt: skip
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with logs[0].open("wb") as log:
        first = Service("adapters.gateway", redis_db, env=env, log=log)
    try:
        port = int(env["OCPP_GATEWAY_PORT"])
        wait_for(lambda: not first.alive() or listening(port), TIMEOUT, "the first gateway")
        assert first.alive(), logs[0].read_text()
        with logs[1].open("wb") as log:
            second = Service("adapters.gateway", redis_db, env=env, log=log)
        assert second.process.wait(TIMEOUT) == 1
    finally:
        assert first.terminate() == 0
    said = logs[1].read_text()
    assert said.splitlines()[-1] == (
        f"ocpp-gateway: cannot listen for chargers on 127.0.0.1:{port} (Address already in use); "
        "choose another OCPP_GATEWAY_PORT"
    )
    assert "Traceback" not in said and "cannot serve health probes" not in said
