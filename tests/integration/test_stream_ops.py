"""The group's Redis operations against a real Redis: the commit fence,
claims with delivery counts, idle-consumer removal, and adapter moves."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from adapters.list_to_stream import ListToStream
from processor import keys
from processor.dispatch import Outcome
from processor.effects import Effects
from processor.stream import GroupStream

pytestmark = pytest.mark.anyio


def outcome(entry_id: bytes, n: int) -> Outcome:
    effects = Effects()
    effects.call("INCR", "effect-counter")
    return Outcome(entry_id, reply_key="ocpp:responses:CP", reply=f"reply-{n}".encode(),
                   effects=effects)  # fmt: skip


async def test_commit_applies_effects_once_when_two_replicas_hold_an_entry(redis: Redis) -> None:
    slow = GroupStream(redis, "slow")
    fast = GroupStream(redis, "fast")
    await slow.ensure_group()
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: b"x"})
    [d] = await slow.read(10, None)
    # The slow replica is still working when the other claims the entry.
    claimed, _ = await fast.claim(min_idle_ms=0, count=10)
    assert [c.entry_id for c in claimed] == [d.entry_id]
    assert claimed[0].deliveries == 2
    assert await fast.commit([outcome(d.entry_id, 1)]) == [1]
    assert await slow.commit([outcome(d.entry_id, 2)]) == [0]
    assert await redis.get("effect-counter") == b"1"
    assert await redis.lrange("ocpp:responses:CP", 0, -1) == [b"reply-1"]
    assert await redis.pttl("ocpp:responses:CP") > 0
    assert (await redis.xpending(keys.INBOUND, keys.GROUP))["pending"] == 0


async def test_commit_reports_failed_effects_and_still_replies(redis: Redis) -> None:
    stream = GroupStream(redis, "c1")
    await stream.ensure_group()
    await redis.set("not-a-hash", "x")
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: b"x"})
    [d] = await stream.read(10, None)
    effects = Effects()
    effects.hset("not-a-hash", {"a": 1})
    effects.call("SET", "after", "1")
    [result] = await stream.commit(
        [Outcome(d.entry_id, "ocpp:responses:CP", b"r", effects=effects)]
    )
    assert isinstance(result, bytes) and b"WRONGTYPE" in result
    assert await redis.get("after") == b"1"
    assert await redis.lrange("ocpp:responses:CP", 0, -1) == [b"r"]


async def test_a_commit_redis_lost_the_script_of_runs_once_loaded_again(redis: Redis) -> None:
    stream = GroupStream(redis, "c1")
    await stream.ensure_group()
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: b"x"})
    [d] = await stream.read(10, None)
    await redis.script_flush()  # a restart, or SCRIPT FLUSH
    assert await stream.commit([outcome(d.entry_id, 1)]) == [1]
    assert await redis.get("effect-counter") == b"1"
    assert await redis.lrange("ocpp:responses:CP", 0, -1) == [b"reply-1"]


async def test_a_commit_redis_refuses_raises_and_applies_nothing(redis: Redis) -> None:
    """Out of memory, Redis refuses the whole script (its shebang asks it
    to): the commit raises, and the entry stays pending for a retry."""
    stream = GroupStream(redis, "c1")
    await stream.ensure_group()
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: b"x"})
    [d] = await stream.read(10, None)
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", 1)
    try:
        with pytest.raises(ResponseError, match="maxmemory"):
            await stream.commit([outcome(d.entry_id, 1)])
    finally:
        await redis.config_set("maxmemory", 0)
    assert await redis.get("effect-counter") is None
    assert (await redis.xpending(keys.INBOUND, keys.GROUP))["pending"] == 1
    assert await stream.commit([outcome(d.entry_id, 1)]) == [1]


async def test_dead_letter_carries_reason_and_envelope(redis: Redis) -> None:
    stream = GroupStream(redis, "c1")
    await stream.ensure_group()
    junk = b"\xff not UTF-8 \x00"
    entry_id = await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: junk})
    await stream.read(10, None)
    await stream.commit([Outcome(entry_id, dead_reason="bad", raw=junk)])
    [(_, fields)] = await redis.xrange(keys.DEAD)
    assert fields[b"reason"] == b"bad"
    assert fields[b"envelope"] == junk
    assert fields[b"entry_id"] == entry_id
    assert fields[b"consumer"] == b"c1"


async def test_hset_if_writes_only_when_the_guard_holds(redis: Redis) -> None:
    stream = GroupStream(redis, "c1")
    await stream.ensure_group()
    await redis.hset("call:known", "state", "pending")
    ids = [await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: b"x"}) for _ in range(2)]
    await stream.read(10, None)
    outs = []
    for entry_id, key in zip(ids, ["call:known", "call:unknown"], strict=True):
        e = Effects()
        e.hset_if(key, {"state": "answered"}, field="state", equals="pending",
                  fallback=keys.ANOMALIES, kind="late")  # fmt: skip
        outs.append(Outcome(entry_id, effects=e))
    assert await stream.commit(outs) == [1, 1]
    assert await redis.hget("call:known", "state") == b"answered"
    assert not await redis.exists("call:unknown")
    [(_, anomaly)] = await redis.xrange(keys.ANOMALIES)
    assert anomaly == {b"key": b"call:unknown", b"kind": b"late", b"state": b"answered"}


async def test_idle_consumers_holding_nothing_are_removed(redis: Redis) -> None:
    a = GroupStream(redis, "holder")
    b = GroupStream(redis, "empty")
    me = GroupStream(redis, "me")
    await a.ensure_group()
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: b"x"})
    await a.read(1, None)
    await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: b"x"})
    [done] = await b.read(1, None)
    await b.commit([Outcome(done.entry_id)])
    assert await me.remove_idle_consumers(idle_ms=-1) == [b"empty"]
    names = {c["name"] for c in await redis.xinfo_consumers(keys.INBOUND, keys.GROUP)}
    assert names == {b"holder"}


async def test_adapter_moves_in_order_and_trims_only_acknowledged(redis: Redis) -> None:
    adapter = ListToStream(redis, batch=100)
    await redis.lpush(keys.REQUESTS, *[f"m{i}".encode() for i in range(250)])
    assert await adapter.trim_once() == -1  # no group yet: keep everything
    assert [await adapter.move_once() for _ in range(4)] == [100, 100, 50, 0]
    entries = await redis.xrange(keys.INBOUND)
    assert [f[b"e"] for _, f in entries] == [f"m{i}".encode() for i in range(250)]

    stream = GroupStream(redis, "c1")
    await stream.ensure_group()
    assert await adapter.trim_once() == 0  # nothing delivered yet
    batch = await stream.read(200, None)
    await stream.commit([Outcome(d.entry_id) for d in batch[:150]])
    assert await adapter.trim_once() > 0
    left = [e for e, _ in await redis.xrange(keys.INBOUND)]
    # Every entry delivered-but-pending or never delivered is still there.
    assert left[-100:] == [e for e, _ in entries[150:]]
    assert len(left) < 250
    await stream.commit([Outcome(d.entry_id) for d in batch[150:]])
    assert len(await stream.read(100, None)) == 50
