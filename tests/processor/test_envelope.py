from __future__ import annotations

import contextlib
import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor import envelope, json_depth
from processor.envelope import Call, CallError, CallResult, Rejected
from processor.errors import FormationViolation, ProtocolViolation, Undeliverable

# The contract's own examples, byte for byte.
BOOT_IN = b'{"charge_point_id":"TEST-CP-PHASE2","message_type":2,"message_id":"boot-test","action":"BootNotification","payload":[2,"boot-test","BootNotification",{"chargePointVendor":"TestVendor","chargePointModel":"TestModel"}],"timestamp":"2024-01-01T12:00:00Z"}'  # noqa: E501
RESULT_IN = b'{"charge_point_id":"TEST-CP-PHASE2","message_type":3,"message_id":"remote-start-1","payload":[3,"remote-start-1",{"status":"Accepted"}],"timestamp":"2024-01-01T12:00:01Z"}'  # noqa: E501
MAX = 65536


def env(**overrides: object) -> bytes:
    base: dict[str, object] = json.loads(BOOT_IN)
    base.update(overrides)
    return json.dumps(base).encode()


def test_decodes_the_contract_call() -> None:
    e = envelope.decode(BOOT_IN, MAX)
    assert e.charge_point_id == "TEST-CP-PHASE2"
    assert isinstance(e.payload, Call)
    assert e.payload.action == "BootNotification"
    assert json.loads(bytes(e.payload.payload))["chargePointVendor"] == "TestVendor"


def test_decodes_the_contract_result() -> None:
    e = envelope.decode(RESULT_IN, MAX)
    assert isinstance(e.payload, CallResult)
    assert e.action is None
    assert bytes(e.payload.payload) == b'{"status":"Accepted"}'


def test_decodes_a_callerror_frame() -> None:
    raw = env(message_type=4, action=None, payload=[4, "boot-test", "NotSupported", "no", {}])
    e = envelope.decode(raw, MAX)
    assert isinstance(e.payload, CallError)
    assert e.payload.error_code == "NotSupported"


def test_unknown_envelope_fields_are_tolerated() -> None:
    e = envelope.decode(env(traceparent="00-abc", extra={"x": [1]}), MAX)
    assert e.message_id == "boot-test"


def test_encoded_reply_matches_the_contract_shape() -> None:
    out = envelope.encode_result("TEST-CP-PHASE2", "boot-test", b'{"a":1}', "2024-01-01T12:00:00Z")
    assert out == (
        b'{"charge_point_id":"TEST-CP-PHASE2","message_type":3,"message_id":"boot-test",'
        b'"payload":[3,"boot-test",{"a":1}],"timestamp":"2024-01-01T12:00:00Z"}'
    )


def test_encoded_error_and_call_match_the_contract_shape() -> None:
    err = envelope.encode_error("CP", "x1", FormationViolation("bad"), "T")
    assert json.loads(err) == {
        "charge_point_id": "CP",
        "message_type": 4,
        "message_id": "x1",
        "payload": [4, "x1", "FormationViolation", "bad", {}],
        "timestamp": "T",
    }
    call = envelope.encode_call("CP", "u1", "RemoteStartTransaction", b'{"idTag":"RFID123"}', "T")
    assert list(json.loads(call)) == [
        "charge_point_id",
        "message_type",
        "message_id",
        "action",
        "payload",
        "timestamp",
    ]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (env(payload=[2, "boot-test", "BootNotification"]), "FormationViolation"),
        (env(payload=[2, "boot-test", "BootNotification", {}, "extra"]), "FormationViolation"),
        (env(payload={"not": "a frame"}), "FormationViolation"),
        (env(payload=[9, "boot-test", "BootNotification", {}]), "ProtocolError"),
        (env(message_type="2"), "ProtocolError"),
        (env(message_type=3), "ProtocolError"),
        (env(message_id="other"), "ProtocolError"),
        (env(action="Heartbeat"), "ProtocolError"),
        (
            env(payload=[2, "x" * 37, "BootNotification", {}], message_id="x" * 37),
            "FormationViolation",
        ),
    ],
)
def test_addressable_faults_are_rejected_with_a_code(raw: bytes, code: str) -> None:
    with pytest.raises(Rejected) as info:
        envelope.decode(raw, MAX)
    assert info.value.error.code == code
    assert info.value.charge_point_id == "TEST-CP-PHASE2"
    assert info.value.error.description


def test_reply_frames_are_never_answered() -> None:
    raw = json.loads(RESULT_IN)
    raw["message_id"] = "other"
    with pytest.raises(Rejected) as info:
        envelope.decode(json.dumps(raw).encode(), MAX)
    assert info.value.is_reply


def test_oversize_envelope_is_rejected_but_addressed() -> None:
    raw = env(padding="x" * 1000)
    with pytest.raises(Rejected) as info:
        envelope.decode(raw, 512)
    assert info.value.error.code == "FormationViolation"
    assert "over the limit of 512" in info.value.error.description
    assert info.value.message_id == "boot-test"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"garbage", "not valid JSON"),
        (b'{"charge_point_id":"cp\xff"}', "not valid JSON"),
        (b"[1,2,3]", "not a JSON object"),
        (b'{"message_type":2,"message_id":"m","payload":[2,"m","A",{}]}', "no charge_point_id"),
        (b'{"charge_point_id":"cp","payload":"x"}', "no readable message id"),
        (b"", "not valid JSON"),
    ],
)
def test_unaddressable_input_is_undeliverable(raw: bytes, reason: str) -> None:
    with pytest.raises(Undeliverable, match=reason):
        envelope.decode(raw, MAX)


def test_message_id_falls_back_to_the_frame() -> None:
    raw = b'{"charge_point_id":"cp","message_type":"x","payload":[2,"m7","Heartbeat",{}]}'
    with pytest.raises(Rejected) as info:
        envelope.decode(raw, MAX)
    assert info.value.message_id == "m7"
    assert isinstance(info.value.error, ProtocolViolation)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@given(st.binary(max_size=300))
def test_garbage_bytes_only_raise_typed_errors(raw: bytes) -> None:
    with contextlib.suppress(Rejected, Undeliverable):
        envelope.decode(raw, MAX)


@given(json_values)
def test_any_json_only_raises_typed_errors(value: object) -> None:
    with contextlib.suppress(Rejected, Undeliverable):
        envelope.decode(msgspec.json.encode(value), MAX)


@given(
    st.fixed_dictionaries(
        {
            "charge_point_id": st.text(min_size=1) | json_values,
            "message_type": st.sampled_from([2, 3, 4]) | json_values,
            "message_id": st.text(max_size=40) | json_values,
            "payload": st.lists(json_values, max_size=6),
        },
        optional={"action": st.text() | json_values, "timestamp": json_values},
    )
)
def test_envelope_shaped_input_only_raises_typed_errors(value: dict[str, object]) -> None:
    try:
        e = envelope.decode(msgspec.json.encode(value), MAX)
    except Rejected as r:
        assert r.charge_point_id and r.message_id
    except Undeliverable as u:
        assert u.reason
    else:
        assert e.message_id == e.payload.unique_id


# Values that cost a decoder stack, time or memory: deep and wide nesting,
# numbers past any machine type, long strings, escapes that are not text.
def _deep_arrays(d: int) -> str:
    return "[" * d + "]" * d


def _deep_objects(d: int) -> str:
    return '{"a":' * d + "1" + "}" * d


# Up to 10,000 levels: deep objects then still fit in the envelope limit.
deep = st.integers(json_depth.MAX_DEPTH + 1, 10_000).flatmap(
    lambda d: st.sampled_from([_deep_arrays(d), _deep_objects(d)])
)
hostile = deep | st.one_of(
    st.integers(1, 20).map(lambda w: "[" + ",".join(["[]"] * w * 1000) + "]"),
    st.integers(1, 50_000).map(lambda n: "-" * (n % 2) + "9" * n),
    st.integers(1, 20_000).map(lambda n: "9" * n + ".5e" + "9" * n),
    st.sampled_from(["1e999999", "-1e-999999", "1E+400"]),
    st.integers(1, 70_000).map(lambda n: '"' + "x" * n + '"'),
    # Instants a datetime cannot hold in UTC, and years before 1000.
    st.sampled_from(
        ['"9999-12-31T23:59:59-23:59"', '"0001-01-01T00:00:00+23:59"', '"0999-01-01T00:00:00Z"']
    ),
    st.sampled_from(['"\\ud800"', '"\\udc00\\ud800"', '"\\u0000"', '"\\x"', '"\udcff"', "nul"]),
)
POSITIONS = ["charge_point_id", "message_type", "message_id", "action", "payload",
             "timestamp", "extra", "frame0", "frame1", "frame2", "frame3"]  # fmt: skip


def _hostile_envelope(position: str, value: str, duplicate: bool) -> bytes:
    fields = {"charge_point_id": '"CP"', "message_type": "2", "message_id": '"m1"',
              "action": '"Heartbeat"'}  # fmt: skip
    frame = ["2", '"m1"', '"Heartbeat"', "{}"]
    if position.startswith("frame"):
        frame[int(position[-1])] = value
    fields["payload"] = "[" + ",".join(frame) + "]"
    items = [f'"{k}":{v}' for k, v in fields.items()]
    if not position.startswith("frame"):
        item = f'"{position}":{value}'
        # A duplicate key comes first: the sane value after it wins, and
        # the hostile one must still be skipped safely.
        items = [item, *items] if duplicate else [*items, item]
    return ("{" + ",".join(items) + "}").encode(errors="surrogateescape")


@given(st.sampled_from(POSITIONS), hostile, st.booleans())
def test_hostile_values_anywhere_only_raise_typed_errors(
    position: str, value: str, duplicate: bool
) -> None:
    raw = _hostile_envelope(position, value, duplicate)
    try:
        envelope.decode(raw, MAX)
    except Rejected as r:
        assert r.charge_point_id and r.message_id and r.error.description
    except Undeliverable as u:
        assert u.reason


@given(st.sampled_from(POSITIONS), deep, st.booleans())
def test_a_deep_value_is_refused_to_the_charger_that_sent_it(
    position: str, value: str, duplicate: bool
) -> None:
    raw = _hostile_envelope(position, value, duplicate)
    assert len(raw) <= MAX
    if position == "charge_point_id" and not duplicate:
        return  # no charger to tell: covered above
    with pytest.raises(Rejected) as info:
        envelope.decode(raw, MAX)
    assert info.value.error.code == "FormationViolation"
    assert info.value.error.description == "JSON nested deeper than 64 levels"
    assert (info.value.charge_point_id, info.value.message_id) == ("CP", "m1")
    assert not info.value.is_reply


def test_a_deep_reply_is_never_answered() -> None:
    deep_payload = _deep_arrays(5000)
    raw = (
        '{"charge_point_id":"CP","message_type":3,"message_id":"m1","payload":[3,"m1",'
        + deep_payload
        + "]}"
    ).encode()
    with pytest.raises(Rejected) as info:
        envelope.decode(raw, MAX)
    assert info.value.is_reply


def test_broken_text_inside_the_frame_is_refused_to_its_charger() -> None:
    raw = env(payload=[2, "boot-test", "BootNotification", {"chargePointVendor": "@"}])
    raw = raw.replace(b'"@"', b'"\\ud800"')
    with pytest.raises(Rejected) as info:
        envelope.decode(raw, MAX)
    assert info.value.error.code == "FormationViolation"
    assert info.value.message_id == "boot-test"


def test_the_fallback_reads_no_more_than_a_bounded_size() -> None:
    raw = env(padding="x" * (16 * 512))
    with pytest.raises(Undeliverable, match="too large to read whom to tell"):
        envelope.decode(raw, 512)
