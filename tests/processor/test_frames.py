"""Which frames a batch records, and how (processor/frames.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from processor import frames, keys
from processor.dispatch import Delivery, Dispatcher, Limits, Outcome
from processor.protocols import protocols
from processor.types import HandlerConfig
from tests.messages import call
from tests.processor.memory_state import MemoryState

pytestmark = pytest.mark.anyio

NOW = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
NOW_MS = 1_704_110_400_000
HEARTBEAT = '[2,"m1","Heartbeat",{}]'


def pushed(out: Outcome, cp: str = "CS1") -> list[dict[str, Any]]:
    """The frame entries its effects push to ``cp``'s frames, oldest
    first, once trimmed."""
    ops = out.effects.ops
    lpush = [op for op in ops if op[:2] == ["call", "LPUSH"]]
    if not lpush:
        return []
    [[_, _, key, *entries]] = lpush
    assert ["call", "LTRIM", key, "0", str(keys.FRAMES_KEPT - 1)] in ops
    assert ["call", "EXPIRE", key, str(frames.KEPT_S)] in ops
    assert key == keys.frames(cp)
    return [json.loads(e) for e in entries]


async def batch(state: MemoryState, *raws: bytes) -> list[Outcome]:
    d = Dispatcher(protocols(), state, HandlerConfig(), Limits())
    deliveries = [Delivery(f"{i}-0".encode(), raw) for i, raw in enumerate(raws, 1)]
    return await d.handle_batch(deliveries, NOW)


async def test_a_watched_chargers_call_and_our_answer_are_recorded() -> None:
    state = MemoryState()
    state.watched.add("CS1")
    [beat, bad] = await batch(state, call("CS1", "m1", "Heartbeat", {}),
                              call("CS1", "m2", "Heartbeat", {"x": 1}))  # fmt: skip
    [inbound, answer] = pushed(beat)
    assert (inbound["dir"], inbound["frame"]) == ("in", HEARTBEAT)
    assert inbound["at"] == NOW_MS  # the envelope's receipt time
    assert answer["dir"] == "out" and answer["at"] == NOW_MS
    assert json.loads(answer["frame"])[:2] == [3, "m1"]
    # A refused CALL changes nothing, but its frames are still shown.
    assert [e["dir"] for e in pushed(bad)] == ["in", "out"]
    assert json.loads(pushed(bad)[1]["frame"])[0] == 4


async def test_an_unwatched_charger_records_nothing_but_answers_to_our_commands() -> None:
    [beat, answer] = await batch(MemoryState(), call("CS1", "m1", "Heartbeat", {}),
                                 b'{"charge_point_id": "CS1", "message_type": 3, "message_id": '
                                 b'"c1", "payload": [3, "c1", {"status": "Accepted"}], '
                                 b'"timestamp": "2024-01-01T12:00:01Z"}')  # fmt: skip
    assert pushed(beat) == []
    [inbound] = pushed(answer)
    assert inbound["frame"] == '[3,"c1",{"status": "Accepted"}]'


def test_a_long_frame_is_kept_cut_saying_how_long_it_was() -> None:
    text = "x" * (frames.MAX_FRAME_CHARS + 5)
    kept = json.loads(frames.entry(1, "in", text))["frame"]
    assert kept.startswith("x" * frames.MAX_FRAME_CHARS)
    assert kept.endswith(f"(cut: {len(text)} characters)")


def test_the_command_script_keeps_as_many_frames_as_the_processor() -> None:
    pump = (Path(frames.__file__).parent / "lua" / "pump.lua").read_text()
    assert f"redis.call('LTRIM', frames, 0, {keys.FRAMES_KEPT - 1})" in pump
    assert f"redis.call('EXPIRE', frames, {frames.KEPT_S})" in pump
