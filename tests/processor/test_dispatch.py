from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor import keys
from processor.commands import CommandRecord
from processor.dispatch import Delivery, Dispatcher, Limits, Outcome
from processor.protocols import protocols
from processor.types import HandlerConfig, OpenedTransaction
from processor.v16.handlers import ROUTES
from processor.v16.messages import REQUESTS
from tests.messages import call, start
from tests.processor.memory_state import MemoryState
from tests.processor.test_envelope import hostile
from tests.processor.test_schemas import SETTINGS, case

pytestmark = pytest.mark.anyio

NOW = datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)


def dispatcher(state: Any = None, **limits: int) -> Dispatcher:
    return Dispatcher(protocols(), state or MemoryState(), HandlerConfig(heartbeat_interval=120),
                      Limits(**limits))  # fmt: skip


def frame(outcome: Outcome) -> list[Any]:
    out: list[Any] = json.loads(outcome.reply)["payload"]
    return out


async def handle(d: Dispatcher, *raws: bytes, deliveries: int = 1) -> list[Outcome]:
    batch = [Delivery(f"{i}-0".encode(), raw, deliveries) for i, raw in enumerate(raws, 1)]
    return await d.handle_batch(batch, NOW)


async def test_boot_is_accepted_with_the_configured_interval() -> None:
    body = {"chargePointVendor": "V", "chargePointModel": "M"}
    [out] = await handle(dispatcher(), call("CP1", "b1", "BootNotification", body))
    assert out.reply_key == "ocpp:responses:CP1"
    assert frame(out) == [3, "b1", {"status": "Accepted", "currentTime": "2024-01-01T12:00:00Z",
                                    "interval": 120}]  # fmt: skip
    op, register = out.effects.ops
    assert op[:3] == ["call", "HSET", keys.charge_point("CP1")]
    assert "charge_point_vendor" in op
    assert register == ["call", "SADD", keys.CHARGE_POINTS, "CP1"]


async def test_reply_timestamp_has_millisecond_precision() -> None:
    [out] = await handle(dispatcher(), call("CP1", "h1", "Heartbeat", {}))
    assert json.loads(out.reply)["timestamp"] == "2024-01-01T12:00:00.123Z"


async def test_start_transaction_retries_get_the_same_id() -> None:
    state = MemoryState()
    d = dispatcher(state)
    first, again, new_id, other = await handle(
        d, start("CP1", "s1"), start("CP1", "s1"), start("CP1", "s2"), start("CP1", "s3", meter=5)
    )
    ids = [frame(o)[2]["transactionId"] for o in (first, again, new_id, other)]
    assert ids[0] == ids[1] == ids[2]
    assert ids[3] != ids[0]
    assert frame(first)[2]["idTagInfo"] == {"status": "Accepted"}


async def test_stop_transaction_is_always_accepted() -> None:
    body = {"meterStop": 10, "timestamp": "2024-01-01T11:59:00Z", "transactionId": 999}
    [out] = await handle(dispatcher(), call("CP1", "t1", "StopTransaction", body))
    assert frame(out) == [3, "t1", {}]
    [op] = state_ops(out)
    assert op[:3] == ["call", "XADD", keys.ANOMALIES]
    assert "StopTransaction for an unknown transaction" in op


async def test_unknown_action_is_not_implemented_and_changes_nothing() -> None:
    [out] = await handle(dispatcher(), call("CP1", "x1", "Foo", {}))
    assert frame(out)[:3] == [4, "x1", "NotImplemented"]
    assert not out.effects.ops


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"chargePointModel": "M"}, "OccurenceConstraintViolation"),
        ({"chargePointVendor": 5, "chargePointModel": "M"}, "TypeConstraintViolation"),
        ({"chargePointVendor": "V" * 21, "chargePointModel": "M"}, "PropertyConstraintViolation"),
        ({"chargePointVendor": "V", "chargePointModel": "M", "x": 1}, "FormationViolation"),
        ([], "FormationViolation"),
    ],
)
async def test_invalid_payloads_get_the_spec_error(payload: Any, code: str) -> None:
    [out] = await handle(dispatcher(), call("CP1", "b1", "BootNotification", payload))
    assert frame(out)[2] == code
    assert frame(out)[3].startswith("BootNotification: ")
    assert not out.effects.ops


def reply(mid: str, payload: Any) -> bytes:
    return json.dumps({"charge_point_id": "CP1", "message_type": 3, "message_id": mid,
                       "payload": [3, mid, payload]}).encode()  # fmt: skip


def state_ops(out: Outcome) -> list[list[Any]]:
    """Its effects but the recording of its frames (tests/processor/test_frames.py)."""
    return [op for op in out.effects.ops
            if not (op[0] == "call" and op[2].startswith(keys.FRAMES_PREFIX))]  # fmt: skip


async def test_reply_completes_its_command_without_answering() -> None:
    state = MemoryState()
    fields = {"charge_point_id": "CP1", "action": "GetConfiguration", "state": "sent",
              "request": "{}"}  # fmt: skip
    state.commands["c1"] = CommandRecord("c1", "CP1", "GetConfiguration", "sent", fields)
    body = {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "60"}]}
    [out] = await handle(dispatcher(state), reply("c1", body))
    assert out.reply_key == ""
    assert out.command is state.commands["c1"]
    [op] = state_ops(out)
    assert op[:3] == ["complete_command", "c1", "CP1"]
    assert op[4][:2] == ["state", "answered"]
    [store] = op[5]
    assert store[:4] == ["call", "HSET", keys.configuration("CP1"), "HeartbeatInterval"]


async def test_invalid_confirmation_fails_its_command() -> None:
    state = MemoryState()
    fields = {"charge_point_id": "CP1", "action": "Reset", "state": "sent", "request": "{}"}
    state.commands["c1"] = CommandRecord("c1", "CP1", "Reset", "sent", fields)
    [out] = await handle(dispatcher(state), reply("c1", {"status": "Maybe"}))
    [op] = state_ops(out)
    outcome = dict(zip(op[4][::2], op[4][1::2], strict=True))
    assert outcome["state"] == "failed"
    assert outcome["error_code"] == "PropertyConstraintViolation"
    assert op[5] == []


async def test_reply_to_an_unknown_command_is_an_anomaly() -> None:
    [out] = await handle(dispatcher(), reply("nope", {"status": "Accepted"}))
    [op] = state_ops(out)
    assert op[:3] == ["call", "XADD", keys.ANOMALIES]
    assert "reply to an unknown command" in op


async def test_garbage_is_dead_lettered_with_its_reason() -> None:
    [out] = await handle(dispatcher(), b"\xff\xfe")
    assert out.reply_key == ""
    assert "not valid JSON" in out.dead_reason
    assert out.raw == b"\xff\xfe"


async def test_hostile_input_never_stops_the_rest_of_the_batch() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    deep_call = call("CP1", "d1", "Heartbeat", {}).replace(b"{}]", deep + b"]")
    deep_reply = reply("c1", {}).replace(b"{}]", deep + b"]")
    huge = call("CP1", "n1", "StatusNotification", {}).replace(
        b"{}]",
        b'{"connectorId":' + b"9" * 50_000 + b',"errorCode":"NoError","status":"Available"}]',
    )
    refused, dropped, out_of_range, fine = await handle(
        dispatcher(), deep_call, deep_reply, huge, call("CP1", "h1", "Heartbeat", {})
    )
    assert frame(refused) == [4, "d1", "FormationViolation", "JSON nested deeper than 64 levels",
                              {}]  # fmt: skip
    assert dropped.reply == b"" and "nested deeper" in dropped.dead_reason
    assert frame(out_of_range)[:3] == [4, "n1", "FormationViolation"]
    assert frame(fine)[:2] == [3, "h1"]


# msgspec checks UTF-8 only where it decodes a string, not in the payload
# it skips while reading the envelope: the payload's own decode finds it.
async def test_a_call_with_bytes_that_are_not_utf8_is_refused() -> None:
    raw = call("CP1", "a1", "Authorize", {"idTag": "@"}).replace(b"@", b"\xff")
    [out] = await handle(dispatcher(), raw)
    assert frame(out)[:3] == [4, "a1", "FormationViolation"]


async def test_a_confirmation_with_bytes_that_are_not_utf8_fails_its_command() -> None:
    state = MemoryState()
    fields = {"charge_point_id": "CP1", "action": "Reset", "state": "sent", "request": "{}"}
    state.commands["c1"] = CommandRecord("c1", "CP1", "Reset", "sent", fields)
    raw = reply("c1", {"status": "@"}).replace(b"@", b"\xff")
    [out] = await handle(dispatcher(state), raw)
    [op] = state_ops(out)
    outcome = dict(zip(op[4][::2], op[4][1::2], strict=True))
    assert outcome["state"] == "failed"
    assert outcome["error_code"] == "FormationViolation"


async def test_poison_call_is_dead_lettered_and_the_charger_told() -> None:
    [out] = await handle(dispatcher(max_deliveries=3), start("CP1", "s1"), deliveries=4)
    assert "delivered 4 times" in out.dead_reason
    assert frame(out)[:3] == [4, "s1", "InternalError"]
    assert not out.effects.ops


async def test_failing_handler_leaves_the_entry_pending() -> None:
    class Broken(MemoryState):
        async def transaction(self, transaction_id: int) -> dict[str, str] | None:
            raise RuntimeError("boom")

    body = {"meterStop": 10, "timestamp": "2024-01-01T13:00:00Z", "transactionId": 1}
    outs = await handle(dispatcher(Broken()), call("CP1", "t1", "StopTransaction", body),
                        call("CP1", "h", "Heartbeat", {}))  # fmt: skip
    assert [o.entry_id for o in outs] == [b"2-0"]


async def test_chargers_run_concurrently_but_each_in_order() -> None:
    # CP-A's first start waits until CP-B has started one: if chargers were
    # handled one after another this would never finish.
    b_started = anyio.Event()

    class Gated(MemoryState):
        async def open_transaction(self, key: str, *args: Any) -> OpenedTransaction:
            if '"CP-B"' in key:
                b_started.set()
            elif not b_started.is_set():
                await b_started.wait()
            return await super().open_transaction(key, *args)

    state = Gated()
    raws = [start("CP-A", "a1", meter=1), start("CP-A", "a2", meter=2), start("CP-B", "b1"),
            start("CP-A", "a3", meter=3)]  # fmt: skip
    with anyio.fail_after(5):
        outs = await handle(dispatcher(state), *raws)
    assert [frame(o)[1] for o in outs] == ["a1", "a2", "b1", "a3"]
    a_calls = [k for k in state.calls if '"CP-A"' in k]
    assert [json.loads(k.split(":", 3)[3])[3] for k in a_calls] == [1, 2, 3]


async def test_transient_failure_aborts_the_whole_batch() -> None:
    class Unreachable(MemoryState):
        async def open_transaction(self, key: str, *args: Any) -> OpenedTransaction:
            raise ConnectionResetError("redis went away")

    d = Dispatcher(protocols(), Unreachable(), HandlerConfig(), Limits(), transient=(OSError,))
    with pytest.raises(ConnectionResetError):
        await handle(d, call("CP1", "h", "Heartbeat", {}), start("CP2", "s1"), start("CP3", "s2"))


async def test_chargers_waiting_on_state_run_concurrently_up_to_the_limit() -> None:
    """Each charger whose handler reads state runs beside the others, at
    most ``concurrency`` at once; every one is answered."""
    running = peak = 0
    release = anyio.Event()

    class Slow(MemoryState):
        async def open_transaction(self, key: str, *args: Any) -> OpenedTransaction:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            if peak == 3:
                release.set()
            await release.wait()  # held until three wait together
            running -= 1
            return await super().open_transaction(key, *args)

    d = dispatcher(Slow(), concurrency=3)
    with anyio.fail_after(5):
        outs = await handle(d, *[start(f"CP{i}", f"s{i}") for i in range(10)])
    assert peak == 3
    assert len({frame(o)[2]["transactionId"] for o in outs}) == 10


def _payloads(action: str) -> st.SearchStrategy[tuple[str, str]]:
    """Hostile values in the action's own fields, where its decoder reads them."""
    names = [f.encode_name for f in msgspec.structs.fields(REQUESTS[action])] or ["x"]
    objects = st.dictionaries(st.sampled_from(names), hostile, min_size=1, max_size=3).map(
        lambda d: "{" + ",".join(f'"{k}":{v}' for k, v in d.items()) + "}"
    )
    return st.tuples(st.just(action), hostile | objects)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(ROUTES)).flatmap(_payloads))
def test_whatever_a_payload_holds_its_entry_is_answered_or_dead_lettered(
    case: tuple[str, str],
) -> None:
    action, payload = case
    raw = call("CP1", "m1", action, {}).replace(
        b"{}]", payload.encode(errors="surrogateescape") + b"]"
    )
    outcomes = anyio.run(handle, dispatcher(), raw)
    assert len(outcomes) == 1, "left pending, to be retried until dead-lettered"
    [out] = outcomes
    assert out.reply or out.dead_reason


# Valid, but at the ends of time: a datetime cannot hold the first in UTC,
# and glibc's strftime writes the last with a three-digit year.
EXTREME_TIMES = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59",
                 "0999-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"]  # fmt: skip


def _at_the_ends_of_time(value: Any, when: str) -> Any:
    if isinstance(value, dict):
        return {k: when if k in ("timestamp", "expiryDate") else _at_the_ends_of_time(v, when)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list):
        return [_at_the_ends_of_time(v, when) for v in value]
    return value


@pytest.mark.parametrize("action", sorted(ROUTES))
@SETTINGS
@given(data=st.data())
def test_every_valid_payload_is_answered(action: str, data: st.DataObject) -> None:
    payload = data.draw(case(action).valid, label="payload")
    when = data.draw(st.none() | st.sampled_from(EXTREME_TIMES), label="timestamps")
    if when is not None:
        payload = _at_the_ends_of_time(payload, when)
    outcomes = anyio.run(handle, dispatcher(), call("CP1", "m1", action, payload))
    assert len(outcomes) == 1, "left pending, to be retried until dead-lettered"
    assert frame(outcomes[0])[0] in (3, 4)


async def test_any_message_marks_its_charger_seen_once_a_minute_not_a_refused_one() -> None:
    state = MemoryState()
    d = dispatcher(state)
    await handle(d, call("CP1", "m1", "StatusNotification",
                         {"connectorId": 1, "errorCode": "NoError", "status": "Available"}),
                 call("CP2", "m1", "Heartbeat", {"x": 1}))  # fmt: skip
    assert state.seen == {}  # written before the next batch, apart from its effects
    await handle(d, call("CP1", "m2", "Heartbeat", {}))
    assert state.seen == {"CP1": "2024-01-01T12:00:00.123456Z"}  # CP2's was refused
    state.seen.clear()
    await handle(d, call("CP1", "m3", "Heartbeat", {}))
    await handle(d, call("CP1", "m4", "Heartbeat", {}))
    assert state.seen == {}  # within the minute: not again
