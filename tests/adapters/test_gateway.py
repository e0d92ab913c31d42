"""The gateway (``adapters/gateway.py``) against the ws-server's wire contract.

Most tests run ``python -m adapters.gateway`` as a real subprocess on a free
port with a real Redis, and talk to it as chargers do: the ``ocpp`` package's
``ChargePoint`` over ``websockets`` with the ``ocpp1.6`` subprotocol, or a
bare websockets client where the frames themselves matter. The pure parts
(envelope building, identities, credentials) and the pump's requeueing are
tested in process. The last test runs the whole system: gateway, adapter and
processor.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import pytest
import redis as redis_sync
import websockets
from hypothesis import given
from hypothesis import strategies as st
from ocpp.exceptions import NotSupportedError
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from adapters.api_queries import send_command
from adapters.devstack import RedisServer, Service, free_port, listening, wait_for
from adapters.gateway_auth import Credentials, PathRefused, identity
from adapters.gateway_inbound import envelope
from adapters.gateway_outbound import Pump, Session
from processor import keys
from processor.command_queue import CommandQueue
from processor.envelope import Rejected, decode
from processor.errors import Undeliverable
from processor.listening import loopback
from processor.redis_io import connect
from tests.processor.test_envelope import hostile

pytestmark = pytest.mark.anyio

TIMEOUT = 10.0
# The contract's fields in its order, then our extension: the charger's OCPP version.
FIELDS = ["charge_point_id", "message_type", "message_id", "action", "payload", "timestamp",
          "protocol"]  # fmt: skip
RFC3339_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


# --- fixtures and helpers ------------------------------------------------------


@dataclass
class Gateway:
    service: Service
    port: int
    scheme: str = "ws"

    def url(self, cp: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{cp}"


StartGateway = Callable[..., Gateway]


def _start(redis_url: str, started: list[Service], log: BinaryIO | None, **env: str) -> Gateway:
    port = free_port()
    full_env = {"OCPP_GATEWAY_HOST": "127.0.0.1", "OCPP_GATEWAY_PORT": str(port), **env}
    service = Service("adapters.gateway", redis_url, env=full_env, log=log)
    started.append(service)
    wait_for(lambda: not service.alive() or listening(port), TIMEOUT, "the gateway to listen")
    assert service.alive(), "the gateway exited at start"
    scheme = "wss" if env.get("OCPP_GATEWAY_TLS_CERT") else "ws"
    return Gateway(service, port, scheme)


@pytest.fixture
def start_gateway(redis_db: str) -> Iterator[StartGateway]:
    """Starts gateways on ``redis_db``; each must exit 0 on SIGTERM."""
    started: list[Service] = []
    yield lambda log=None, **env: _start(redis_db, started, log, **env)
    for service in started:
        assert service.terminate() == 0


@pytest.fixture
async def redis(redis_db: str) -> AsyncIterator[Redis]:
    client = connect(redis_db)
    yield client
    await client.aclose()


def reply(cp: str, frame: list[Any]) -> str:
    """An outbound envelope as the processor writes it."""
    env: dict[str, Any] = {"charge_point_id": cp, "message_type": frame[0],
                           "message_id": frame[1]}  # fmt: skip
    if frame[0] == 2:
        env["action"] = frame[2]
    env |= {"payload": frame, "timestamp": "2024-01-01T12:00:00Z"}
    return json.dumps(env)


async def pop_request(redis: Redis) -> bytes:
    got = await redis.brpop([keys.REQUESTS], timeout=TIMEOUT)
    assert got is not None, "nothing arrived on ocpp:requests"
    raw: bytes = got[1]
    return raw


def ocpp_connect(
    url: str, protocol: str = "ocpp1.6", **kwargs: Any
) -> websockets.asyncio.client.connect:
    return websockets.connect(url, subprotocols=[protocol], open_timeout=TIMEOUT, **kwargs)


class Station201(ChargePoint201):  # type: ignore[misc]
    """A 2.0.1 charge point that accepts remote starts."""

    @on("RequestStartTransaction")
    async def on_request_start(self, id_token: dict[str, Any], remote_start_id: int,
                               **_: Any) -> Any:  # fmt: skip
        return result201.RequestStartTransaction(status="Accepted", transaction_id="TX-R")


class Recorder:
    """The charger's connection, keeping every frame it sends."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.sent: list[str] = []

    async def send(self, message: str) -> None:
        self.sent.append(message)
        await self.ws.send(message)

    async def recv(self) -> str | bytes:
        return await self.ws.recv()


@asynccontextmanager
async def charge_point(
    url: str, cp_id: str, protocol: str = "ocpp1.6"
) -> AsyncIterator[tuple[Any, Recorder]]:
    """An ``ocpp`` ChargePoint of ``protocol`` connected to ``url`` and reading its socket."""
    async with ocpp_connect(url, protocol) as ws:
        recorder = Recorder(ws)
        kind = Station201 if protocol == "ocpp2.0.1" else ChargePoint
        cp = kind(cp_id, recorder, response_timeout=TIMEOUT)

        async def read() -> None:
            with suppress(ConnectionClosed):
                await cp.start()

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            yield cp, recorder
            tg.cancel_scope.cancel()


def wire_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- inbound: frames to envelopes ------------------------------------------------


async def test_boot_notification_is_forwarded_exactly_and_answered(
    start_gateway: StartGateway, redis: Redis
) -> None:
    gw = start_gateway()
    async with charge_point(gw.url("CP-BOOT"), "CP-BOOT") as (cp, recorder):
        result: list[Any] = []

        async def boot() -> None:
            req = call.BootNotification(charge_point_model="TestModel",
                                        charge_point_vendor="TestVendor")  # fmt: skip
            result.append(await cp.call(req, suppress=False))

        async with anyio.create_task_group() as tg:
            tg.start_soon(boot)
            raw = (await pop_request(redis)).decode()
            [frame] = recorder.sent
            mid = strict_json(frame)[1]
            env = json.loads(raw)
            assert list(env) == FIELDS
            assert raw == (
                f'{{"charge_point_id":"CP-BOOT","message_type":2,"message_id":{json.dumps(mid)},'
                f'"action":"BootNotification","payload":{frame},'
                f'"timestamp":"{env["timestamp"]}","protocol":"ocpp1.6"}}'
            )
            assert RFC3339_MS.fullmatch(env["timestamp"])
            received = datetime.fromisoformat(env["timestamp"])
            assert abs(received - datetime.now(UTC)) < timedelta(seconds=30)
            body = {"status": "Accepted", "currentTime": wire_now(), "interval": 300}
            await redis.lpush(keys.responses("CP-BOOT"), reply("CP-BOOT", [3, mid, body]))
        assert result[0].status == "Accepted"
        assert result[0].interval == 300


@pytest.mark.parametrize(
    ("frame", "fields"),
    [
        ('[2,"m1","Heartbeat",{}]', {"message_type": 2, "message_id": "m1",
                                     "action": "Heartbeat"}),
        ('[3, "r1", {"status": "Accepted"}]', {"message_type": 3, "message_id": "r1"}),
        ('[4,"e1","NotImplemented","",{}]', {"message_type": 4, "message_id": "e1"}),
        ('[2, 5, "X", {}]', {"message_type": 2, "message_id": "", "action": "X"}),
        ('["2", "m1", 7]', {"message_type": 0, "message_id": "m1"}),
        ('[9,"m9"]', {"message_type": 9, "message_id": "m9"}),
        ("[]", {"message_type": 0, "message_id": ""}),
        ('{"a": 1}', {"message_type": 0, "message_id": ""}),
        ("not json", {"message_type": 0, "message_id": ""}),
        ("0:", {"message_type": 0, "message_id": ""}),
        ('[2,"m1","Heartbeat"', {"message_type": 0, "message_id": ""}),
    ],
)  # fmt: skip
def test_every_frame_becomes_an_envelope(frame: str, fields: dict[str, Any]) -> None:
    raw = envelope("CP", frame.encode(), "2024-01-01T12:00:00.000Z", "ocpp2.0.1")
    env = json.loads(raw)
    assert list(env) == [f for f in FIELDS if f != "action" or "action" in fields]
    assert env["protocol"] == "ocpp2.0.1"
    assert {k: env[k] for k in fields} == fields
    try:
        strict_json(frame)
    except ValueError:
        assert env["payload"] == frame  # not JSON: kept as a string
    else:
        assert f'"payload":{frame},' in raw.decode()  # verbatim


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str) -> object:
    """json.loads without Python's extensions (NaN, Infinity), as the gateway reads."""
    return json.loads(text, parse_constant=_no_constant)


frames = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(st.integers(), st.text(max_size=40), st.none()), max_size=5).map(json.dumps),
)


@given(frames)
def test_no_frame_breaks_the_envelope(frame: str) -> None:
    env = json.loads(envelope("CP", frame.encode(), "2024-01-01T12:00:00.000Z"))
    # No protocol given, none said: the contract's fields alone.
    assert [f for f in env if f != "action"] == [
        f for f in FIELDS if f not in ("action", "protocol")
    ]
    assert isinstance(env["message_type"], int) and isinstance(env["message_id"], str)
    try:
        assert env["payload"] == strict_json(frame)
    except ValueError:
        assert env["payload"] == frame


DEEP = "[" * 5000 + "]" * 5000


@given(st.sampled_from(range(4)), hostile)
def test_a_hostile_element_leaves_the_head_readable(index: int, value: str) -> None:
    items = ["2", '"m1"', '"Heartbeat"', "{}"]
    items[index] = value
    frame = ("[" + ",".join(items) + "]").encode(errors="surrogateescape")
    raw = envelope("CP", frame, "2024-01-01T12:00:00.000Z")
    try:
        decode(raw, 1 << 20)
    except Rejected as r:
        assert r.charge_point_id == "CP" and r.error.description
    except Undeliverable as u:
        assert u.reason


def test_a_frame_too_deep_to_decode_goes_on_for_the_processor_to_refuse() -> None:
    frame = f'[2,"m1","Heartbeat",{DEEP}]'
    raw = envelope("CP", frame.encode(), "2024-01-01T12:00:00.000Z")
    assert raw.startswith(b'{"charge_point_id":"CP","message_type":2,"message_id":"m1",'
                          b'"action":"Heartbeat","payload":[2,')  # fmt: skip
    with pytest.raises(Rejected) as info:
        decode(raw, 1 << 20)
    assert (info.value.message_id, info.value.error.code) == ("m1", "FormationViolation")


async def test_garbage_is_forwarded(start_gateway: StartGateway, redis: Redis) -> None:
    gw = start_gateway()
    async with ocpp_connect(gw.url("CP-G")) as ws:
        await ws.send("hello")
        await ws.send('{"x": [1]}')
        await ws.send(f'{{"x": {DEEP}}}')
        await ws.send(f'[2,"d1","Heartbeat",{DEEP}]')
        await ws.send('[2,"h1","Heartbeat",{}]')  # the connection is still there
        garbage = [json.loads(await pop_request(redis)) for _ in range(2)]
        deep = [await pop_request(redis) for _ in range(2)]
        heartbeat = json.loads(await pop_request(redis))
    assert [g["payload"] for g in garbage] == ["hello", {"x": [1]}]
    assert all(g["message_type"] == 0 and g["message_id"] == "" for g in garbage)
    assert f'"payload":{{"x": {DEEP}}},'.encode() in deep[0]
    assert b'"message_id":"d1"' in deep[1] and DEEP.encode() in deep[1]
    assert heartbeat["message_id"] == "h1"


# --- outbound: envelopes to frames -----------------------------------------------


async def test_replies_reach_the_charger_in_order(
    start_gateway: StartGateway, redis: Redis
) -> None:
    gw = start_gateway()
    async with ocpp_connect(gw.url("CP-ORDER")) as ws:
        frames = [[3, f"m{i}", {"currentTime": wire_now()}] for i in range(50)]
        for frame in frames:  # one LPUSH each, as the processor does
            await redis.lpush(keys.responses("CP-ORDER"), reply("CP-ORDER", frame))
        got = [json.loads(await ws.recv()) for _ in frames]
    assert got == frames


async def test_replies_queued_before_connecting_are_delivered(
    start_gateway: StartGateway, redis: Redis
) -> None:
    gw = start_gateway()
    queued = [[2, f"q{i}", "RemoteStartTransaction", {"idTag": "RFID123"}] for i in range(3)]
    for frame in queued:
        await redis.lpush(keys.responses("CP-EARLY"), reply("CP-EARLY", frame))
    async with ocpp_connect(gw.url("CP-EARLY")) as ws:
        got = [json.loads(await ws.recv()) for _ in queued]
        assert got == queued
        # Nothing more came in between: the next frame is the next pushed.
        await redis.lpush(keys.responses("CP-EARLY"), reply("CP-EARLY", [3, "next", {}]))
        assert json.loads(await ws.recv()) == [3, "next", {}]
    assert await redis.llen(keys.responses("CP-EARLY")) == 0


async def test_payload_is_written_verbatim(start_gateway: StartGateway, redis: Redis) -> None:
    gw = start_gateway()
    env = (
        '{"charge_point_id":"CP-V","message_type":3,"message_id":"v",'
        '"payload": [3, "v", {"a": 1.50}] }'
    )
    async with ocpp_connect(gw.url("CP-V")) as ws:
        await redis.lpush(keys.responses("CP-V"), "not an envelope", env)
        assert await ws.recv() == '[3, "v", {"a": 1.50}]'


async def test_a_reply_key_of_the_wrong_type_harms_no_one(
    start_gateway: StartGateway, redis: Redis
) -> None:
    gw = start_gateway()
    await redis.set(keys.responses("CP-W"), "not a list")
    async with ocpp_connect(gw.url("CP-W")), ocpp_connect(gw.url("CP-OK")) as ok:
        await redis.lpush(keys.responses("CP-OK"), reply("CP-OK", [3, "fine", {}]))
        assert json.loads(await ok.recv()) == [3, "fine", {}]
    assert gw.service.alive()


async def test_thousand_chargers_share_a_few_redis_connections(
    start_gateway: StartGateway, redis: Redis, redis_db: str
) -> None:
    counter = redis_sync.Redis.from_url(redis_db, single_connection_client=True)
    await redis.ping()  # the test's own connection, counted before
    before = counter.info("clients")["connected_clients"]
    gw = start_gateway()
    n = 1000
    async with anyio.create_task_group() as tg:
        done: list[int] = []

        async def charger(i: int, ready: anyio.Event) -> None:
            async with ocpp_connect(gw.url(f"CP-{i}")) as ws:
                ready.set()
                assert json.loads(await ws.recv()) == [3, f"m{i}", {}]
                done.append(i)

        for i in range(n):
            ready = anyio.Event()
            tg.start_soon(charger, i, ready)
            await ready.wait()
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(n):
                pipe.lpush(keys.responses(f"CP-{i}"), reply(f"CP-{i}", [3, f"m{i}", {}]))
            await pipe.execute()
    assert len(done) == n
    # The gateway's connections: the notifier's, and the pool the forwarder
    # and the pump share; not one per charger.
    gateway_connections = counter.info("clients")["connected_clients"] - before
    counter.close()
    assert gateway_connections <= 3


# --- the handshake -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["ocpp1.6"], "ocpp1.6"),
        (["ocpp2.0.1"], "ocpp2.0.1"),
        (["ocpp2.0.1", "ocpp1.6"], "ocpp2.0.1"),
        (["ocpp2.1", "ocpp1.6", "ocpp2.0.1"], "ocpp1.6"),
    ],
)
async def test_the_first_version_the_charger_offers_that_we_speak_is_kept(
    start_gateway: StartGateway, redis: Redis, offered: list[Any], chosen: str
) -> None:
    gw = start_gateway()
    async with websockets.connect(gw.url("CP-SUB"), subprotocols=offered) as ws:
        assert ws.subprotocol == chosen
        await ws.send('[2,"m1","Heartbeat",{}]')
        env = json.loads(await pop_request(redis))
    assert env["protocol"] == chosen


@pytest.mark.parametrize("offered", [["ocpp2.1", "ocpp1.5"], None])
async def test_a_client_offering_no_version_we_speak_is_refused(
    start_gateway: StartGateway, offered: list[Any] | None
) -> None:
    """OCPP-J 1.6 section 3.1.2: finish the handshake without the header, then close."""
    gw = start_gateway()
    async with websockets.connect(gw.url("CP-SUB"), subprotocols=offered) as ws:
        assert ws.subprotocol is None
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1002


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/CP-1", "CP-1"),
        ("/" + "x" * 48, "x" * 48),
        ("/CP_1-a.b*c=d+e@f|g?query=ignored", "CP_1-a.b*c=d+e@f|g"),
        ("/CP%7C1", "CP|1"),
    ],
)
def test_valid_identities(path: str, expected: str) -> None:
    assert identity(path) == expected


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 404), ("/a/b", 404), ("//a", 404), ("", 404), ("/" + "x" * 49, 400),
        ("/bad%20id", 400), ("/a:b", 400), ("/%2Fx", 400), ("/caf%C3%A9", 400),
        ("/%FF", 400), ("/a%00", 400), ("/a%0Ab", 400), ("/<script>", 400),
    ],
)  # fmt: skip
def test_invalid_identities(path: str, status: int) -> None:
    with pytest.raises(PathRefused) as refused:
        identity(path)
    assert refused.value.status == status


async def test_bad_paths_are_refused_over_http(start_gateway: StartGateway) -> None:
    gw = start_gateway()
    base = f"ws://127.0.0.1:{gw.port}"
    for path, status in [("/", 404), ("/a/b", 404), ("/" + "x" * 49, 400), ("/a:b", 400)]:
        with pytest.raises(InvalidStatus) as refused:
            async with ocpp_connect(base + path):
                pass
        assert refused.value.response.status_code == status, path
    async with ocpp_connect(base + "/CP%7C1") as ws:
        await ws.send('[2,"m","Heartbeat",{}]')


async def test_a_new_connection_replaces_the_old(start_gateway: StartGateway, redis: Redis) -> None:
    gw = start_gateway()
    async with ocpp_connect(gw.url("CP-R")) as first, ocpp_connect(gw.url("CP-R")) as second:
        with pytest.raises(ConnectionClosed) as closed:
            await first.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1000
        await redis.lpush(keys.responses("CP-R"), reply("CP-R", [3, "after", {}]))
        assert json.loads(await second.recv()) == [3, "after", {}]
        await second.send('[2,"h","Heartbeat",{}]')
        assert json.loads(await pop_request(redis))["message_id"] == "h"


async def test_an_oversize_frame_closes_with_1009(start_gateway: StartGateway) -> None:
    gw = start_gateway(OCPP_GATEWAY_MAX_FRAME_BYTES="1024")
    async with ocpp_connect(gw.url("CP-BIG")) as ws:
        await ws.send(json.dumps([2, "big", "DataTransfer", {"vendorId": "x", "data": "a" * 2000}]))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def test_basic_auth(start_gateway: StartGateway, redis: Redis, tmp_path: Path) -> None:
    secret = "s3cret-AuthorizationKey"
    creds = tmp_path / "credentials"
    creds.write_text(f"# id:password\nCP-A:{secret}\n\n")
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        gw = start_gateway(log=log, OCPP_GATEWAY_BASIC_AUTH=str(creds))
        async with ocpp_connect(gw.url("CP-A"), additional_headers=_basic("CP-A", secret)) as ws:
            await ws.send('[2,"a","Heartbeat",{}]')
            assert json.loads(await pop_request(redis))["charge_point_id"] == "CP-A"
        refused = [
            ("CP-A", {}),
            ("CP-A", _basic("CP-A", secret + "x")),
            ("CP-A", _basic("CP-B", secret)),
            ("CP-A", {"Authorization": "Bearer " + secret}),
            ("CP-B", _basic("CP-B", secret)),
        ]
        for cp, headers in refused:
            with pytest.raises(InvalidStatus) as status:
                async with ocpp_connect(gw.url(cp), additional_headers=headers):
                    pass
            assert status.value.response.status_code == 401
            assert status.value.response.headers["WWW-Authenticate"].startswith("Basic")
        # The file is read again when it changes.
        creds.write_text(f"CP-A:{secret}\nCP-B:another-password-16\n")
        async with ocpp_connect(
            gw.url("CP-B"), additional_headers=_basic("CP-B", "another-password-16")
        ):
            pass
        assert gw.service.terminate() == 0
    text = log_path.read_text()
    assert "refused CP-A" in text
    assert secret not in text and "another-password" not in text


async def test_failed_logins_are_limited_per_source(
    start_gateway: StartGateway, redis: Redis, tmp_path: Path
) -> None:
    secret = "s3cret-RateLimitedKey"
    creds = tmp_path / "credentials"
    creds.write_text(f"CP-L:{secret}\n")
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        gw = start_gateway(log=log, OCPP_GATEWAY_BASIC_AUTH=str(creds),
                           OCPP_GATEWAY_AUTH_MAX_FAILURES="3",
                           OCPP_GATEWAY_AUTH_WINDOW_S="600")  # fmt: skip

        async def status(headers: dict[str, str], **kw: Any) -> InvalidStatus:
            with pytest.raises(InvalidStatus) as refused:
                async with ocpp_connect(gw.url("CP-L"), additional_headers=headers, **kw):
                    pass
            return refused.value

        for _ in range(3):
            assert (await status(_basic("CP-L", "wrong"))).response.status_code == 401
        # The right password now: refused unchecked, told when to come back.
        limited = (await status(_basic("CP-L", secret))).response
        assert limited.status_code == 429
        assert 0 < int(limited.headers["Retry-After"]) <= 600
        # Another address on this host is not affected.
        async with ocpp_connect(gw.url("CP-L"), additional_headers=_basic("CP-L", secret),
                                local_addr=("127.0.0.2", 0)) as ws:  # fmt: skip
            await ws.send('[2,"l","Heartbeat",{}]')
            assert json.loads(await pop_request(redis))["charge_point_id"] == "CP-L"
        # A flood of attempts is refused without flooding the log.
        for _ in range(40):
            assert (await status(_basic("CP-L", secret))).response.status_code == 429
        assert gw.service.terminate() == 0
    text = log_path.read_text()
    assert "refused CP-L from 127.0.0.1: wrong password" in text
    assert "127.0.0.1: 3 failed logins within 600 s; refusing it for 600 s" in text
    assert "refused CP-L from 127.0.0.1: too many failed logins" in text
    warnings = [line for line in text.splitlines() if '"level":"WARNING"' in line]
    assert len(warnings) <= 20  # 44 refusals; the budget is 10 lines per 10 s
    token = base64.b64encode(f"CP-L:{secret}".encode()).decode()
    assert (
        secret not in text
        and token not in text
        and "wrong" not in text.replace("wrong password", "")
    )


async def test_zero_turns_the_login_limit_off(
    start_gateway: StartGateway, redis: Redis, tmp_path: Path
) -> None:
    creds = tmp_path / "credentials"
    creds.write_text("CP-Z:right-password-for-zero\n")
    gw = start_gateway(OCPP_GATEWAY_BASIC_AUTH=str(creds), OCPP_GATEWAY_AUTH_MAX_FAILURES="0")
    for _ in range(12):
        with pytest.raises(InvalidStatus) as refused:
            async with ocpp_connect(gw.url("CP-Z"), additional_headers=_basic("CP-Z", "wrong")):
                pass
        assert refused.value.response.status_code == 401  # never 429
    right = _basic("CP-Z", "right-password-for-zero")
    async with ocpp_connect(gw.url("CP-Z"), additional_headers=right) as ws:
        await ws.send('[2,"z","Heartbeat",{}]')
        assert json.loads(await pop_request(redis))["charge_point_id"] == "CP-Z"
    assert gw.service.terminate() == 0


@pytest.mark.parametrize(
    ("host", "auth", "warned"),
    [("0.0.0.0", False, True), ("127.0.0.1", False, False), ("0.0.0.0", True, False)],
)
def test_an_open_gateway_beyond_loopback_warns_once(
    start_gateway: StartGateway, tmp_path: Path, host: str, auth: bool, warned: bool
) -> None:
    creds = tmp_path / "credentials"
    creds.write_text("CP-1:a-password-of-16\n")
    env = {"OCPP_GATEWAY_HOST": host}
    if auth:
        env["OCPP_GATEWAY_BASIC_AUTH"] = str(creds)
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        gw = start_gateway(log=log, **env)
        # The socket listens before the service runs: wait until it serves.
        # The warning comes in the same step as this line, before any signal.
        wait_for(lambda: "listening on" in log_path.read_text(), TIMEOUT, "the gateway to serve")
        assert gw.service.terminate() == 0
    text = log_path.read_text()
    assert "listening on" in text
    lines = [line for line in text.splitlines() if "anyone who can reach the port" in line]
    if not warned:
        assert lines == []
        return
    [line] = lines
    assert '"level":"WARNING"' in line
    assert "OCPP_GATEWAY_BASIC_AUTH" in line and "can connect as any charger" in line


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
     ("0.0.0.0", False), ("::", False), ("192.0.2.1", False), ("::ffff:192.0.2.1", False),
     ("fe80::1%eth0", False), ("localhost", False)],
)  # fmt: skip
def test_loopback(host: str, expected: bool) -> None:
    # A bound socket's address; a name never is one, so it counts as open.
    assert loopback(host) == expected


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
async def test_tls(start_gateway: StartGateway, redis: Redis, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await anyio.run_process(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
    )  # fmt: skip
    gw = start_gateway(OCPP_GATEWAY_TLS_CERT=str(cert), OCPP_GATEWAY_TLS_KEY=str(key))
    context = ssl.create_default_context(cafile=str(cert))
    async with ocpp_connect(gw.url("CP-TLS"), ssl=context) as ws:
        await ws.send('[2,"t","Heartbeat",{}]')
        assert json.loads(await pop_request(redis))["charge_point_id"] == "CP-TLS"
    with pytest.raises((OSError, InvalidHandshake)):
        async with ocpp_connect(f"ws://127.0.0.1:{gw.port}/CP-TLS"):
            pass


def test_credentials_file(tmp_path: Path) -> None:
    path = tmp_path / "c"
    path.write_text("CP-1:pa:ss word\n#CP-2:x\n")
    creds = Credentials(str(path))
    good = "Basic " + base64.b64encode(b"CP-1:pa:ss word").decode()
    assert creds.check("CP-1", good) is None
    assert creds.check("CP-2", "Basic " + base64.b64encode(b"CP-2:x").decode()) is not None
    assert creds.check("CP-1", "Basic !!!") == "malformed credentials"
    path.write_text("CP-1\n")
    with pytest.raises(ValueError, match="line 1"):
        Credentials(str(path))


# --- lifecycle and Redis faults ------------------------------------------------------


async def test_sigterm_closes_with_1001_and_exits_0(
    start_gateway: StartGateway, redis: Redis
) -> None:
    gw = start_gateway()
    async with ocpp_connect(gw.url("CP-T")) as ws:
        await ws.send('[2,"last","Heartbeat",{}]')
        assert json.loads(await pop_request(redis))["message_id"] == "last"
        async with anyio.create_task_group() as tg:
            codes: list[int] = []
            tg.start_soon(lambda: _terminate(gw.service, codes))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001
    assert codes == [0]


async def _terminate(service: Service, codes: list[int]) -> None:
    codes.append(await anyio.to_thread.run_sync(service.terminate))


async def test_unsent_envelopes_go_back_in_order(redis: Redis) -> None:
    """What a charger's connection did not send returns to the right end of
    its list, and a reconnecting charger gets it before anything newer."""

    class Closed:
        async def send(self, message: bytes, *, text: bool | None = None) -> None:
            raise AssertionError("not sent here")

    pump = Pump(redis, requeue_ttl_s=60)
    session = Session("CP-Q", Closed())
    pump.attach(session)
    session.deliver([reply("CP-Q", [3, f"u{i}", {}]).encode() for i in range(3)])
    await redis.lpush(keys.responses("CP-Q"), reply("CP-Q", [3, "newer", {}]))
    pump.detach(session)
    async with anyio.create_task_group() as tg:
        tg.start_soon(pump.run)
        pump.stop()
    left = [json.loads(e)["message_id"] for e in await redis.lrange(keys.responses("CP-Q"), 0, -1)]
    assert left == ["newer", "u2", "u1", "u0"]  # RPOP order: u0, u1, u2, newer
    assert 0 < await redis.ttl(keys.responses("CP-Q")) <= 60


async def test_a_replacing_connection_takes_over_what_was_unsent(redis: Redis) -> None:
    class Silent:
        async def send(self, message: bytes, *, text: bool | None = None) -> None:
            raise AssertionError("not sent here")

    pump = Pump(redis, requeue_ttl_s=60)
    old, new = Session("CP-H", Silent()), Session("CP-H", Silent())
    pump.attach(old)
    old.deliver([b"a", b"b"])
    pump.attach(new)
    new.deliver([b"c"])
    assert old.replaced and not old.outbox
    assert list(new.outbox) == [b"a", b"b", b"c"]
    assert pump.sessions == {"CP-H": new}
    pump.detach(old)  # the old handler finishing must not unregister the new
    assert pump.sessions == {"CP-H": new}


@pytest.mark.slow
async def test_delivery_survives_a_redis_restart(private_redis: RedisServer) -> None:
    started: list[Service] = []
    gw = _start(private_redis.url, started, None)
    client = connect(private_redis.url)
    try:
        async with ocpp_connect(gw.url("CP-RS")) as ws:
            await client.lpush(keys.responses("CP-RS"), reply("CP-RS", [3, "before", {}]))
            assert json.loads(await ws.recv())[1] == "before"
            await anyio.to_thread.run_sync(private_redis.restart)
            await client.aclose()
            client = connect(private_redis.url)
            await client.lpush(keys.responses("CP-RS"), reply("CP-RS", [3, "after", {}]))
            with anyio.fail_after(TIMEOUT):
                assert json.loads(await ws.recv())[1] == "after"
            await ws.send('[2,"in","Heartbeat",{}]')
            got = await client.brpop([keys.REQUESTS], timeout=TIMEOUT)
            assert got is not None and json.loads(got[1])["message_id"] == "in"
    finally:
        await client.aclose()
        assert started[0].terminate() == 0


@pytest.mark.slow
@pytest.mark.parametrize("refused", ["-client|tracking", "resetchannels"])
async def test_polls_where_client_tracking_is_refused(
    private_redis: RedisServer, tmp_path: Path, refused: str
) -> None:
    """The command itself, or the channel its invalidations come on."""
    admin = connect(private_redis.url)
    await admin.execute_command("ACL", "SETUSER", "gw", "on", ">pw", "~*", "&*", "+@all", refused)
    started: list[Service] = []
    url = f"redis://gw:pw@127.0.0.1:{private_redis.port}/0"
    log_path = tmp_path / "gateway.log"
    try:
        with log_path.open("wb") as log:
            gw = _start(url, started, log)
            async with ocpp_connect(gw.url("CP-P")) as ws:
                for i in range(3):
                    await admin.lpush(keys.responses("CP-P"), reply("CP-P", [3, f"p{i}", {}]))
                    assert json.loads(await ws.recv())[1] == f"p{i}"
    finally:
        await admin.aclose()
        assert started[0].terminate() == 0
    assert "refused CLIENT TRACKING" in log_path.read_text()


# --- the whole system ------------------------------------------------------------------


@pytest.mark.slow
async def test_a_charge_point_talks_to_the_whole_system(
    start_gateway: StartGateway, redis_db: str
) -> None:
    adapter = Service("adapters", redis_db)
    processor = Service("processor", redis_db, env={"OCPP_READ_BLOCK_MS": "200",
                                                    "OCPP_HEARTBEAT_INTERVAL": "120"})  # fmt: skip
    try:
        gw = start_gateway()
        async with charge_point(gw.url("CP-E2E"), "CP-E2E") as (cp, _):
            boot = await cp.call(
                call.BootNotification(charge_point_model="M", charge_point_vendor="V"),
                suppress=False,
            )
            assert boot.status == "Accepted" and boot.interval == 120
            beat = await cp.call(call.Heartbeat(), suppress=False)
            assert datetime.fromisoformat(beat.current_time).tzinfo is not None
            started = await cp.call(
                call.StartTransaction(connector_id=1, id_tag="RFID123", meter_start=0,
                                      timestamp=wire_now()),
                suppress=False,
            )  # fmt: skip
            assert started.id_tag_info["status"] == "Accepted"
            assert isinstance(started.transaction_id, int)
    finally:
        assert processor.terminate() == 0
        assert adapter.terminate() == 0


@pytest.mark.slow
async def test_a_16_and_a_201_charger_are_each_answered_in_their_own_version(
    start_gateway: StartGateway, redis_db: str
) -> None:
    adapter = Service("adapters", redis_db)
    processor = Service("processor", redis_db, env={"OCPP_READ_BLOCK_MS": "200",
                                                    "OCPP_HEARTBEAT_INTERVAL": "120"})  # fmt: skip
    try:
        gw = start_gateway()
        async with (
            charge_point(gw.url("CP-16"), "CP-16") as (old, _),
            charge_point(gw.url("CS-201"), "CS-201", "ocpp2.0.1") as (new, _),
        ):
            boot16 = await old.call(
                call.BootNotification(charge_point_model="M", charge_point_vendor="V"),
                suppress=False,
            )
            station = {"model": "M", "vendor_name": "V"}
            boot201 = await new.call(
                call201.BootNotification(charging_station=station, reason="PowerUp"),
                suppress=False,
            )
            assert boot16.status == boot201.status == "Accepted"
            assert boot16.interval == boot201.interval == 120
            beat = await new.call(call201.Heartbeat(), suppress=False)
            assert datetime.fromisoformat(beat.current_time).tzinfo is not None
            await new.call(
                call201.StatusNotification(timestamp=wire_now(), connector_status="Available",
                                           evse_id=1, connector_id=1),
                suppress=False,
            )  # fmt: skip
            token = {"id_token": "TOKEN-201", "type": "ISO14443"}
            authorized = await new.call(call201.Authorize(id_token=token), suppress=False)
            assert authorized.id_token_info["status"] == "Accepted"
            await new.call(
                call201.SecurityEventNotification(type="StartupOfTheDevice",
                                                  timestamp=wire_now()),
                suppress=False,
            )  # fmt: skip
            # A CSMS's own action, sent by a station: NotSupported.
            with pytest.raises(NotSupportedError):
                await new.call(call201.ClearCache(), suppress=False)
            # A 2.0.1 command through the queue, answered by the station.
            client = connect(redis_db)
            start = b'{"idToken":{"idToken":"T1","type":"Central"},"remoteStartId":7}'
            try:
                queue = CommandQueue(client)
                action = "RequestStartTransaction"
                command = await send_command(client, queue, "CS-201", action, start, wait_s=10)
            finally:
                await client.aclose()
            assert command.state == "answered", command
            assert command.result == {"status": "Accepted", "transactionId": "TX-R"}
        admin = redis_sync.Redis.from_url(redis_db, decode_responses=True)
        try:
            assert admin.hget(keys.charge_point("CP-16"), "protocol") == "ocpp1.6"
            assert admin.hget(keys.charge_point("CS-201"), "protocol") == "ocpp2.0.1"
            connector = admin.hgetall(keys.evse_connector("CS-201", 1, 1))
            assert connector["status"] == "Available"
        finally:
            admin.close()
    finally:
        assert processor.terminate() == 0
        assert adapter.terminate() == 0
