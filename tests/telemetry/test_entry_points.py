"""Every entry point exports as the README's ``OTEL_*`` settings say: the
real console scripts (gateway, adapter, two processors, the API and the
CLI) export to an OTLP/HTTP receiver of the test's own, while a simulated
charger answers the commands they send. A command's trace runs from the
API request (or the CLI's run) to its ``send`` span, and the span handling
the charger's reply, on whichever processor took it, links to that."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import redis as redis_sync

from adapters.devstack import Service, console_script, free_port, listening, wait_for
from processor import keys
from tests.simulator import finish, sim
from tests.telemetry.otlp_receiver import Exported, Receiver, values

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_otel_env")]

TIMEOUT = 20.0
CP = "CP-0001"  # the simulator's first charger with --prefix CP
THEIR_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
THEIR_SPAN = "00f067aa0ba902b7"
REQUEST = "POST /v1/charge-points/{charge_point_id}/commands/{action}"
# Export soon, except where the test shows that exiting flushes.
SOON = {"OTEL_BSP_SCHEDULE_DELAY": "100"}
ONLY_AT_EXIT = {"OTEL_BSP_SCHEDULE_DELAY": "600000", "OTEL_METRIC_EXPORT_INTERVAL": "600000"}


@dataclass
class Stack:
    """Gateway, adapter and two processors exporting to ``receiver``, and a
    simulated charger connected to the gateway."""

    redis_url: str
    receiver: Receiver
    services: list[Service] = field(default_factory=list)

    def otel(self, **more: str) -> dict[str, str]:
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.receiver.url,
                "OTEL_TRACES_SAMPLER": "parentbased_always_on", **more}  # fmt: skip

    def start(self, script: str, **env: str) -> Service:
        service = Service(script, self.redis_url, env=env, script=script)
        self.services.append(service)
        return service

    def stop(self) -> list[int]:
        """SIGTERM to each, last started first; their exit codes."""
        return [service.terminate() for service in reversed(self.services)]

    def reply_span(self, send: Exported) -> Exported:
        """The processor span that handled the reply to ``send``'s command."""

        def linked() -> list[Exported]:
            return [e for e in self.receiver.spans()
                    if any(link.span_id == send.span.span_id for link in e.span.links)]  # fmt: skip

        self.receiver.until(lambda: bool(linked()), TIMEOUT, "span linked to the send span")
        [handled] = linked()
        return handled


@pytest.fixture
def stack(redis_db: str, receiver: Receiver) -> Iterator[Stack]:
    s = Stack(redis_db, receiver)
    port = free_port()
    gateway = s.start("ocpp-gateway", OCPP_GATEWAY_HOST="127.0.0.1",
                      OCPP_GATEWAY_PORT=str(port), **s.otel(**ONLY_AT_EXIT))  # fmt: skip
    s.start("ocpp-adapter", **s.otel(**SOON))
    for name in ("p1", "p2"):
        s.start("ocpp-processor", OCPP_CONSUMER_NAME=name, OCPP_READ_BLOCK_MS="200",
                **s.otel(**SOON))  # fmt: skip
    charger = None
    try:
        wait_for(lambda: not gateway.alive() or listening(port), TIMEOUT, "the gateway")
        assert gateway.alive(), "the gateway exited at start"
        charger = sim(f"ws://127.0.0.1:{port}", "--chargers", "1", "--prefix", "CP",
                      "--sessions", "0", "--linger", "60")  # fmt: skip
        client = redis_sync.Redis.from_url(redis_db)
        try:
            # Booted: commands are refused for chargers the system does not know.
            wait_for(lambda: client.sismember(keys.CHARGE_POINTS, CP), TIMEOUT, "the boot")
        finally:
            client.close()
        yield s
    finally:
        if charger is not None:
            finish(charger)
        codes = s.stop()
    assert codes == [0] * len(codes)


def only(spans: list[Exported], service: str, name: str) -> Exported:
    """The one span ``name`` that ``service`` exported."""
    found = [e for e in spans if e.service == service and e.span.name == name]
    assert len(found) == 1, [(e.service, e.span.name) for e in spans]
    return found[0]


def assert_child(child: Exported, parent: Exported) -> None:
    assert child.span.trace_id == parent.span.trace_id
    assert child.span.parent_span_id == parent.span.span_id


def assert_answered_reply(handled: Exported, send: Exported) -> None:
    assert handled.service == "ocpp-processor"
    assert handled.span.links[0].trace_id == send.span.trace_id
    got = values(list(handled.span.attributes))
    assert got["ocpp.action"] == "Reset" and got["ocpp.outcome"] == "answered"


def test_an_api_request_traces_through_to_the_reply(stack: Stack) -> None:
    port = free_port()
    api = stack.start("ocpp-api", OCPP_API_HOST="127.0.0.1", OCPP_API_PORT=str(port),
                      **stack.otel(**ONLY_AT_EXIT))  # fmt: skip
    # uvicorn listens once the app has started.
    wait_for(lambda: not api.alive() or listening(port), TIMEOUT, "the API")
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=TIMEOUT) as http:
        for probe in ("/livez", "/readyz", "/healthz"):
            assert http.get(probe).status_code == 200
        resp = http.post(f"/v1/charge-points/{CP}/commands/Reset", params={"wait": "10"},
                         json={"type": "Soft"},
                         headers={"traceparent": f"00-{THEIR_TRACE}-{THEIR_SPAN}-01"})  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "answered"
    # The API exports only as it exits (ONLY_AT_EXIT): SIGTERM must flush.
    assert api.terminate() == 0
    stack.services.remove(api)

    spans = stack.receiver.spans()
    request = only(spans, "ocpp-api", REQUEST)
    send = only(spans, "ocpp-api", "send Reset")
    assert request.span.kind == request.span.SPAN_KIND_SERVER
    assert request.span.trace_id.hex() == THEIR_TRACE  # it continues the caller's trace
    assert request.span.parent_span_id.hex() == THEIR_SPAN
    got = values(list(request.span.attributes))
    assert got["http.route"] == "/v1/charge-points/{charge_point_id}/commands/{action}"
    assert got["http.status_code"] == 200
    assert_child(send, request)
    assert {e.span.name for e in spans if e.service == "ocpp-api"} == {REQUEST, "send Reset"}
    assert "http.server.duration" in stack.receiver.metric_names("ocpp-api")
    assert_answered_reply(stack.reply_span(send), send)


def test_a_cli_send_traces_through_to_the_reply(stack: Stack) -> None:
    cli = subprocess.run(
        [console_script("ocpp-cli"), "send", CP, "Reset", '{"type":"Soft"}', "--wait", "10"],
        env={**os.environ, "REDIS_URL": stack.redis_url, **stack.otel(**ONLY_AT_EXIT)},
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["state"] == "answered"
    # Exported before it exited, though its batch was due in ten minutes.
    spans = stack.receiver.spans()
    run = only(spans, "ocpp-cli", "ocpp-cli send")
    send = only(spans, "ocpp-cli", "send Reset")
    assert run.span.kind == run.span.SPAN_KIND_INTERNAL and not run.span.parent_span_id
    assert_child(send, run)
    assert_answered_reply(stack.reply_span(send), send)

    # The gateway, too, exports what it holds as it exits.
    gateway = stack.services.pop(0)
    assert gateway.terminate() == 0
    assert "ocpp.gateway.frames" in stack.receiver.metric_names("ocpp-gateway")
