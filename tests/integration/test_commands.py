"""Commands to chargers on a real Redis: one CALL in flight per charger, the
rest queued in order; replies completing them on a consumer; deadlines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis

from processor import history, keys
from processor.command_queue import CommandQueue, Sweeper
from processor.commands import CommandRejected
from processor.consumer import Consumer
from processor.dispatch import Dispatcher, Limits
from processor.protocols import protocols
from processor.settings import ProcessorSettings
from processor.state import RedisState
from processor.stream import GroupStream
from processor.types import HandlerConfig

pytestmark = pytest.mark.anyio

CP = "CP1"


@pytest.fixture
async def processor(redis: Redis) -> AsyncIterator[None]:
    """A consumer and a deadline sweeper running in the background."""
    settings = ProcessorSettings(read_block_ms=50)
    dispatcher = Dispatcher(protocols(), RedisState(redis, 60), HandlerConfig(), Limits())
    consumer = Consumer(GroupStream(redis, "c1"), dispatcher, settings)
    sweeper = Sweeper(CommandQueue(redis), interval_s=0.02)
    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer.run)
        tg.start_soon(sweeper.run)
        yield
        consumer.stop()
        sweeper.stop()


async def charger_receives(redis: Redis) -> dict[str, Any]:
    """The next frame the ws-server would write to the charger's socket."""
    got = await redis.brpop([keys.responses(CP)], timeout=5)
    assert got is not None, "no CALL reached the charger"
    envelope: dict[str, Any] = json.loads(got[1])
    return envelope


async def charger_answers(redis: Redis, message_id: str, payload: Any, error: bool = False) -> None:
    frame = [4, message_id, payload, "it failed", {}] if error else [3, message_id, payload]
    raw = json.dumps({"charge_point_id": CP, "message_type": frame[0],
                      "message_id": message_id, "payload": frame}).encode()  # fmt: skip
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: raw})


async def until(predicate: Callable[[], Awaitable[bool]]) -> None:
    with anyio.fail_after(5):
        while not await predicate():
            await anyio.wait_all_tasks_blocked()


async def test_one_call_in_flight_the_rest_queued_in_order(redis: Redis, processor: None) -> None:
    q = CommandQueue(redis)
    first = await q.send(CP, "Reset", b'{"type":"Soft"}')
    second = await CommandQueue(redis).send(CP, "ClearCache", b"{}")
    third = await q.send(CP, "UnlockConnector", b'{"connectorId":1}')
    assert [first.state, second.state, third.state] == ["sent", "queued", "queued"]
    assert "sent_at_ms" in first.fields and "sent_at_ms" not in second.fields
    call = await charger_receives(redis)
    assert call == {"charge_point_id": CP, "message_type": 2, "message_id": first.command_id,
                    "action": "Reset", "payload": [2, first.command_id, "Reset", {"type": "Soft"}],
                    "timestamp": call["timestamp"]}  # fmt: skip
    assert await redis.llen(keys.responses(CP)) == 0  # nothing else while one is in flight
    for cmd, action in ((first, "ClearCache"), (second, "UnlockConnector")):
        await charger_answers(redis, cmd.command_id, {"status": "Accepted"})
        assert (await charger_receives(redis))["action"] == action
    done = await q.wait(first.command_id, 5)
    assert done is not None and done.state == "answered"
    assert done.fields["status"] == "Accepted"
    assert int(done.fields["round_trip_ms"]) >= 0
    assert (await q.get(second.command_id)).state == "answered"  # type: ignore[union-attr]


async def test_wait_returns_as_soon_as_the_answer_lands(redis: Redis, processor: None) -> None:
    q = CommandQueue(redis)
    cmd = await q.send(CP, "GetConfiguration", b'{"key":["HeartbeatInterval"]}')
    await charger_receives(redis)
    answer = {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "60"}],
              "unknownKey": []}  # fmt: skip
    async with anyio.create_task_group() as tg:
        tg.start_soon(charger_answers, redis, cmd.command_id, answer)
        with anyio.fail_after(5):
            done = await q.wait(cmd.command_id, timeout_s=30)
    assert done is not None and done.state == "answered"
    stored = await redis.hget(keys.configuration(CP), "HeartbeatInterval")
    assert json.loads(stored or b"") == {
        "key": "HeartbeatInterval",
        "readonly": False,
        "value": "60",
    }


async def test_callerror_and_invalid_confirmations_fail_the_command(
    redis: Redis, processor: None
) -> None:
    q = CommandQueue(redis)
    refused = await q.send(CP, "Reset", b'{"type":"Hard"}')
    await charger_receives(redis)
    await charger_answers(redis, refused.command_id, "NotSupported", error=True)
    done = await q.wait(refused.command_id, 5)
    assert done is not None and done.state == "failed"
    assert done.fields["error_code"] == "NotSupported"
    garbled = await q.send(CP, "Reset", b'{"type":"Hard"}')
    await charger_receives(redis)
    await charger_answers(redis, garbled.command_id, {"status": "Perhaps"})
    done = await q.wait(garbled.command_id, 5)
    assert done is not None and done.state == "failed"
    assert done.fields["error_code"] == "PropertyConstraintViolation"


async def test_timeout_frees_the_slot_and_a_late_reply_is_not_applied(
    redis: Redis, processor: None
) -> None:
    q = CommandQueue(redis)
    slow = await q.send(CP, "GetConfiguration", b"{}", timeout_s=0.2)
    waiting = await q.send(CP, "ClearCache", b"{}", timeout_s=10)
    await charger_receives(redis)
    done = await q.wait(slow.command_id, 5)
    assert done is not None and done.state == "timed_out"
    # The slot was freed: the next command goes out.
    assert (await charger_receives(redis))["message_id"] == waiting.command_id
    late = {"configurationKey": [{"key": "K", "readonly": True, "value": "v"}]}
    await charger_answers(redis, slow.command_id, late)

    async def recorded() -> bool:
        return await redis.hexists(keys.command(slow.command_id), "late_state")

    await until(recorded)
    after = await q.get(slow.command_id)
    assert after is not None and after.state == "timed_out"
    assert after.fields["late_state"] == "answered"
    assert not await redis.exists(keys.configuration(CP))
    assert (await q.get(waiting.command_id)).state == "sent"  # type: ignore[union-attr]
    # History has it queued, timed out, then with its late reply: in that
    # order, the archiver's row ends timed_out with the late reply kept.
    states = [(f["state"], "late_state" in f) for f in await command_history(redis)
              if f["command_id"] == slow.command_id]  # fmt: skip
    assert states == [("queued", False), ("timed_out", False), ("timed_out", True)]


async def command_history(redis: Redis) -> list[dict[str, str]]:
    """The command records the scripts appended to ocpp:history, in order."""
    entries: Any = await redis.xrange(keys.HISTORY)
    return [history.decode_lua(blob) for _, fields in entries for name, blob in fields.items()
            if name.startswith(b"!command")]  # fmt: skip


async def test_a_queued_command_times_out_without_being_sent(redis: Redis, processor: None) -> None:
    q = CommandQueue(redis)
    await q.send(CP, "ClearCache", b"{}", timeout_s=10)
    queued = await q.send(CP, "Reset", b'{"type":"Soft"}', timeout_s=0.1)
    done = await q.wait(queued.command_id, 5)
    assert done is not None and done.state == "timed_out" and "sent_at_ms" not in done.fields
    await charger_receives(redis)
    assert await redis.llen(keys.responses(CP)) == 0


@pytest.mark.parametrize(("action", "body", "why"), [
    ("Fly", b"{}", "not a command"),
    ("BootNotification", b"{}", "not a command"),
    ("Reset", b'{"type":"Gentle"}', "invalid Reset request"),
    ("Reset", b"{", "not valid JSON"),
    ("RemoteStartTransaction", b'{"idTag":"' + b"x" * 21 + b'"}', "length <= 20"),
])  # fmt: skip
async def test_invalid_commands_are_refused(
    redis: Redis, action: str, body: bytes, why: str
) -> None:
    with pytest.raises(CommandRejected, match=why):
        await CommandQueue(redis).send(CP, action, body)
    assert await redis.dbsize() == 0
