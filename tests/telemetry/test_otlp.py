"""The exporter process's fast path: our OTLP encoding against the SDK's,
and the OTLP/HTTP sender against a real HTTP receiver."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.resources import Resource

from processor import otlp_http, telemetry
from processor.otlp import Encoder
from processor.otlp_http import DEFAULT_ENDPOINT, HttpConfig, HttpSender
from processor.span_exporter import _Replay
from processor.span_record import SpanRecord
from tests.telemetry.conftest import serving

INT64 = st.integers(-(2**63), 2**63 - 1)
VALUES = st.one_of(st.text(max_size=40), st.booleans(), INT64, st.floats(allow_nan=False))
HEX32 = st.integers(1, 2**128 - 1).map(lambda n: f"{n:032x}")
HEX16 = st.integers(1, 2**64 - 1).map(lambda n: f"{n:016x}")
TRACEPARENTS = st.builds(lambda t, s, f: f"00-{t}-{s}-{f:02x}", HEX32, HEX16, st.integers(0, 255))
RECORDS = st.builds(
    SpanRecord,
    scope=st.sampled_from(["ocpp.processor", "ocpp.adapter", "ocpp.commands"]),
    name=st.text(min_size=1, max_size=30),
    kind=st.integers(0, 4),
    trace_id=HEX32,
    span_id=HEX16,
    parent_id=st.one_of(st.just(""), HEX16),
    start_ns=st.integers(0, 2**63),
    end_ns=st.integers(0, 2**63),
    attributes=st.dictionaries(st.text(min_size=1, max_size=20), VALUES, max_size=12),
    links=st.lists(TRACEPARENTS, max_size=2),
    error=st.one_of(st.just(""), st.text(min_size=1, max_size=30)),
)
RESOURCE = {"service.name": "ocpp-processor", "service.instance.id": "h-1", "pid": 7}


class Collect(sdk_trace.SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[sdk_trace.ReadableSpan] = []

    def on_end(self, span: sdk_trace.ReadableSpan) -> None:
        self.spans.append(span)


def sdk_request(records: list[SpanRecord]) -> ExportTraceServiceRequest:
    """What the SDK's own exporters would send for ``records``."""
    collect = Collect()
    _Replay([collect], Resource(RESOURCE)).record(records)
    return encode_spans(collect.spans)


@settings(max_examples=300, deadline=None)
@given(st.lists(RECORDS, min_size=1, max_size=6))
def test_our_encoding_is_the_sdks(records: list[SpanRecord]) -> None:
    ours = ExportTraceServiceRequest.FromString(Encoder(RESOURCE).request(records))
    assert ours == sdk_request(records)


def test_repeated_and_unique_values_encode_alike_after_the_cache_gives_up() -> None:
    encoder = Encoder(RESOURCE)
    records = [
        SpanRecord("ocpp.processor", "process", 4, f"{n + 1:032x}", f"{n + 1:016x}", "", n, n + 1,
                   {"messaging.message.id": f"1-{n}", "ocpp.action": "Heartbeat",
                    "flag": n % 2 == 1, "n": n % 2})
        for n in range(2_500)
    ]  # fmt: skip
    for chunk in (records[:1_200], records[1_200:]):
        ours = ExportTraceServiceRequest.FromString(encoder.request(chunk))
        assert ours == sdk_request(chunk)


# -- configuration ---------------------------------------------------------------


def test_config_reads_the_standard_variables() -> None:
    assert HttpConfig.from_env({}).endpoint == DEFAULT_ENDPOINT
    config = HttpConfig.from_env({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%20ecret,x-tenant=a",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "64",
        "OTEL_BSP_SCHEDULE_DELAY": "250",
    })  # fmt: skip
    assert config.endpoint == "http://collector:4318/v1/traces"  # a base: the path is appended
    assert config.headers == {"api-key": "s ecret", "x-tenant": "a"}
    assert (config.timeout_s, config.compression, config.verify) == (3.0, "gzip", "/etc/ca.pem")
    assert (config.batch_size, config.delay_s) == (64, 0.25)
    traces = HttpConfig.from_env({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c:443/custom",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "3",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "7",
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": "brotli",
    })  # fmt: skip
    assert traces.endpoint == "https://c:443/custom"  # signal-specific: as it is
    assert (traces.timeout_s, traces.compression) == (7.0, "none")


@pytest.mark.parametrize(
    ("env", "fast"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp",
          "OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER": "x"}, False),
    ],
)  # fmt: skip
def test_only_plain_otlp_http_takes_the_fast_path(
    env: dict[str, str], fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
                 "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert telemetry.otlp_http_only() is fast


# -- the sender against a receiver -------------------------------------------------


class Receiver:
    """Answers each POST with the next status of ``statuses`` (then 200),
    and keeps the bodies it accepted, decompressed, with their headers.
    With ``keep_alive``, HTTP/1.1 connections that it closes after each
    request all the same, as a collector timing out idle ones would."""

    def __init__(self, keep_alive: bool = False) -> None:
        self.statuses: list[int] = []
        self.accepted: list[tuple[dict[str, str], bytes]] = []
        self.attempts = 0
        self.retry_after: str | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"

            def do_POST(self) -> None:
                self.close_connection = True  # (without saying so, on HTTP/1.1)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.attempts += 1
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    receiver.accepted.append((dict(self.headers), body))
                self.send_response(status)
                if status != 200 and receiver.retry_after is not None:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    with serving(r.server):
        yield r


def test_the_sender_posts_protobuf_with_headers_and_gzip(receiver: Receiver) -> None:
    sender = HttpSender(HttpConfig(receiver.url, {"api-key": "k"}, compression="gzip"))
    body = Encoder(RESOURCE).request([SpanRecord("s", "n", 1, "1" * 32, "2" * 16, "", 1, 2, {})])
    assert sender.send(body, 1)
    sender.close()
    [(headers, got)] = receiver.accepted
    assert got == body
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["api-key"] == "k"


def test_the_sender_retries_what_the_collector_says_may_work_later(receiver: Receiver) -> None:
    receiver.statuses = [503, 429]
    receiver.retry_after = "0"  # (else the backoff would be 1 s, then 2)
    sender = HttpSender(HttpConfig(receiver.url, timeout_s=10))
    assert sender.send(b"x", 3)
    assert (receiver.attempts, len(receiver.accepted), sender.dropped) == (3, 1, 0)


def test_the_sender_drops_what_the_collector_refuses(receiver: Receiver) -> None:
    receiver.statuses = [400]
    sender = HttpSender(HttpConfig(receiver.url))
    assert not sender.send(b"x", 3)
    assert (receiver.attempts, sender.dropped) == (1, 3)
    assert sender.send(b"y", 1)  # and goes on with the next
    assert [body for _, body in receiver.accepted] == [b"y"]


def test_the_sender_gives_up_on_an_unreachable_collector_within_its_timeout() -> None:
    sender = HttpSender(HttpConfig("http://127.0.0.1:9/v1/traces", timeout_s=1.5))
    assert not sender.send(b"x", 2)
    assert sender.dropped == 2


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (HttpConfig("collector:4318/v1/traces"), "InvalidSchema"),  # no http(s)://
        # A client certificate that is not there: requests raises a bare OSError.
        (HttpConfig("https://127.0.0.1:9/v1/traces", client_cert="/nonexistent.pem"), "OSError"),
    ],
)
def test_the_sender_gives_up_at_once_on_what_no_retry_can_fix(
    config: HttpConfig, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    sender = HttpSender(config)
    assert not sender.send(b"x", 2)  # and does not raise
    assert sender.dropped == 2
    assert reason in caplog.text


def test_a_client_certificate_alone_is_used_as_a_pem_with_its_key() -> None:
    env = {"OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": "/etc/both.pem"}
    assert HttpConfig.from_env(env).client_cert == "/etc/both.pem"
    env["OTEL_EXPORTER_OTLP_CLIENT_KEY"] = "/etc/key.pem"
    assert HttpConfig.from_env(env).client_cert == ("/etc/both.pem", "/etc/key.pem")


def test_out_of_range_integers_and_signed_zeros_encode_faithfully() -> None:
    encoder = Encoder(RESOURCE)
    records = [
        SpanRecord("s", "n", 1, "1" * 32, f"{n + 1:016x}", "", 1, 2, {"v": value})
        for n, value in enumerate([0.0, -0.0, 0.0, 2**64 + 5, -(2**63), True, 1])
    ]
    [scope] = (
        ExportTraceServiceRequest.FromString(encoder.request(records)).resource_spans[0].scope_spans
    )
    got = [s.attributes[0].value for s in scope.spans]
    assert [str(g.double_value) for g in got[:3]] == ["0.0", "-0.0", "0.0"]
    assert got[3].string_value == str(2**64 + 5)  # no int64 holds it
    assert got[4].int_value == -(2**63)
    assert got[5].bool_value is True and got[6].int_value == 1


def test_the_sender_reads_proxies_and_cas_from_the_environment_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("https_proxy", "no_proxy", "all_proxy", "ALL_PROXY", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)  # (lowercase ones win in urllib)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/env-bundle.pem")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "collector.local")
    near = HttpSender(HttpConfig(endpoint="https://collector.local:4318/v1/traces"))
    far = HttpSender(HttpConfig(endpoint="https://far:4318/v1/traces", verify="/etc/otel-ca.pem"))
    assert near._session.verify == "/etc/env-bundle.pem"  # as requests would pick
    assert "https" not in near._session.proxies  # NO_PROXY
    assert far._session.proxies["https"] == "http://proxy.invalid:3128"
    assert far._session.verify == "/etc/otel-ca.pem"  # OTEL_EXPORTER_OTLP_CERTIFICATE wins
    assert not far._session.trust_env  # and not again on every post


def test_plain_http_without_a_proxy_takes_the_standard_librarys_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "collector.local")
    assert HttpSender(HttpConfig("http://collector.local:4318/v1/traces"))._plain is not None
    assert HttpSender(HttpConfig("http://far:4318/v1/traces"))._plain is None  # proxied
    assert HttpSender(HttpConfig("https://collector.local:4318/v1/traces"))._plain is None
    assert HttpSender(HttpConfig("http://u:p@collector.local:4318/v1/traces"))._plain is None


def test_a_kept_alive_connection_the_collector_closed_is_replaced_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []
    monkeypatch.setattr(otlp_http.time, "sleep", waits.append)
    receiver = Receiver(keep_alive=True)
    with serving(receiver.server):
        sender = HttpSender(HttpConfig(receiver.url, {"api-key": "k"}))
        assert sender._plain is not None
        for body in (b"one", b"two", b"three"):
            assert sender.send(body, 1)
        sender.close()
    assert [body for _, body in receiver.accepted] == [b"one", b"two", b"three"]
    assert receiver.accepted[0][0]["api-key"] == "k"
    assert receiver.accepted[0][0]["Content-Type"] == "application/x-protobuf"
    assert waits == []  # no backoff: the dead connection was no failure of the collector
    assert sender.dropped == 0


def test_a_redirect_on_the_plain_path_is_followed_through_requests() -> None:
    # http.client does not follow redirects; requests does, as the SDK's
    # exporter would: the plain path must not count a 308 as delivered.
    got: list[tuple[str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                self.send_response(308)
                self.send_header("Location", "/moved/v1/traces")
            else:
                got.append((self.path, body))
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with serving(server):
        sender = HttpSender(HttpConfig(f"http://127.0.0.1:{server.server_address[1]}/v1/traces"))
        assert sender._plain is not None
        assert sender.send(b"spans", 1)
        assert sender.send(b"more", 1)
        sender.close()
    assert got == [("/moved/v1/traces", b"spans"), ("/moved/v1/traces", b"more")]
    assert sender._plain is None and sender.dropped == 0


@pytest.mark.parametrize("value", ["a\nb", "caf\u00e9\u2603"])
def test_a_header_value_http_client_refuses_drops_the_spans_without_raising(
    receiver: Receiver, value: str
) -> None:
    sender = HttpSender(HttpConfig(receiver.url, {"api-key": value}))
    assert not sender.send(b"x", 2)
    assert sender.dropped == 2 and receiver.attempts == 0
