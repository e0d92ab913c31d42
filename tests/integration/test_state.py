"""State writes on a real Redis: the reservation that opens a transaction,
and the commit's conditional ops that make the result order-independent."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from adapters.devstack import RedisServer
from processor import history, keys
from processor.dispatch import Outcome
from processor.effects import Effects
from processor.redis_io import TRANSIENT, connect, script
from processor.state import RedisState
from processor.stream import GroupStream
from processor.types import IdTagRecord

pytestmark = pytest.mark.anyio


async def commit_each(redis: Redis, *effects: Effects) -> list[object]:
    """Commit each Effects as its own entry, in order."""
    stream = GroupStream(redis, "c1")
    await stream.ensure_group()
    ids = [await redis.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: b"x"}) for _ in effects]
    await stream.read(len(ids), None)
    return await stream.commit([Outcome(i, effects=e) for i, e in zip(ids, effects, strict=True)])


def newer(status: str, at: str) -> Effects:
    e = Effects()
    e.hset_newer("conn", {"status": status}, timestamp_field="at", timestamp=at)
    return e


async def test_newest_wins_whatever_the_order(redis: Redis) -> None:
    old, new = "2024-01-01T10:00:00.000000Z", "2024-01-01T11:00:00.000000Z"
    await commit_each(redis, newer("Charging", new), newer("Available", old))
    assert await redis.hgetall("conn") == {b"status": b"Charging", b"at": new.encode()}
    await commit_each(redis, newer("Finishing", new))
    assert await redis.hget("conn", "status") == b"Charging"  # same time: first kept


def told(at: str, **values: str) -> Effects:
    e = Effects()
    e.newest_fields("vars", "vars:at", at, values)
    return e


async def test_a_device_model_keeps_the_newest_word_per_variable(redis: Redis) -> None:
    """A report generated at 10:00, a SetVariables answered at 11:00, then a
    late part of the 10:00 report: the set value stays; the report's other
    variables are still taken."""
    t10, t11, t12 = (f"2024-01-01T1{h}:00:00.000000Z" for h in (0, 1, 2))
    await commit_each(redis, told(t10, Interval="300", Mode="A"), told(t11, Interval="60"),
                      told(t10, Interval="900", Other="x"))  # fmt: skip
    assert await redis.hgetall("vars") == {b"Interval": b"60", b"Mode": b"A", b"Other": b"x"}
    assert await redis.hgetall("vars:at") == {b"Interval": t11.encode(), b"Mode": t10.encode(),
                                              b"Other": t10.encode()}  # fmt: skip
    # A later word wins; the same time again is written again (a redelivery).
    await commit_each(redis, told(t12, Interval="120"), told(t10, Mode="B"))
    assert await redis.hmget("vars", ["Interval", "Mode"]) == [b"120", b"B"]


async def test_unset_if_clears_only_its_own_marker(redis: Redis) -> None:
    await redis.set("marker", "7")
    await redis.hset("conn", "transaction_id", "8")
    mine, theirs = Effects(), Effects()
    mine.unset_if("marker", 7)
    theirs.unset_if("conn", 7, field="transaction_id")
    await commit_each(redis, mine, theirs)
    assert not await redis.exists("marker")
    assert await redis.hget("conn", "transaction_id") == b"8"


async def test_opening_a_transaction_is_idempotent_by_content(redis: Redis) -> None:
    state = RedisState(redis, idempotency_ttl_s=60, max_session_s=60)
    await redis.hset(keys.id_tag("TAG"), mapping={"status": "Accepted", "parent_id_tag": "P"})
    args = ("CP1", 1, "TAG", 100, "2024-01-01T11:00:00.000000Z", None)
    first = await state.open_transaction("k1", *args)
    again = await state.open_transaction("k1", *args)
    other = await state.open_transaction("k2", "CP2", 1, "TAG", 5, "2024-01-01T11:05:00.000000Z", 3)
    assert first == again
    assert first.concurrent_with is None and first.id_tag is not None
    assert first.id_tag.parent_id_tag == "P"
    assert other.transaction_id == first.transaction_id + 1
    assert other.concurrent_with == first.transaction_id
    record = await state.transaction(first.transaction_id)
    assert record == {"charge_point_id": "CP1", "connector_id": "1", "id_tag": "TAG",
                      "meter_start": "100",
                      "start_timestamp": "2024-01-01T11:00:00.000000Z"}  # fmt: skip
    assert (await state.transaction(other.transaction_id) or {})["reservation_id"] == "3"
    assert await redis.hget(keys.connector("CP1", 1), "transaction_id") == b"1"
    assert await redis.smembers(keys.ACTIVE_TRANSACTIONS) == {b"1", b"2"}
    assert 0 < await redis.ttl(keys.id_tag_active("TAG")) <= 60
    assert await state.id_tag("TAG") == (first.id_tag, first.transaction_id)
    assert await state.transaction(99) is None


async def test_reads_made_in_one_turn_share_one_round_trip(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    await redis.hset(keys.id_tag("A"), mapping={"status": "Accepted"})
    await redis.set(keys.id_tag_active("A"), "7")
    await redis.set(keys.transaction(9), "not a hash")  # WRONGTYPE for its reader only
    # Loaded ahead, as a running processor has it: no NOSCRIPT round below.
    await redis.script_load(script(redis, "processor", "open_transaction").script)
    state = RedisState(redis, 60)
    sent = 0
    send = redis.connection_pool.connection_class.send_packed_command

    async def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal sent
        sent += 1
        await send(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection_pool.connection_class, "send_packed_command", counted)
    results = await asyncio.gather(
        *(state.id_tag(tag) for tag in ("A", "B", "C")),
        state.transaction(9),
        state.is_known_charger("CP"),
        return_exceptions=True,
    )
    assert sent == 1
    assert results[0] == (IdTagRecord("Accepted", None, None), 7)
    assert results[1] == results[2] == (None, None)
    assert isinstance(results[3], ResponseError) and "WRONGTYPE" in str(results[3])
    assert results[4] is False
    # The next turn's reads are a round trip of their own.
    opened = await state.open_transaction("idem", "CP", 1, "B", 0, "2024-01-01T00:00:00Z", None)
    assert (opened.transaction_id, sent) == (1, 2)


async def test_a_script_redis_forgot_is_loaded_again(redis: Redis) -> None:
    state = RedisState(redis, 60)
    await redis.script_flush()  # a restart, or SCRIPT FLUSH
    opened = await state.open_transaction("idem", "CP", 1, "T", 0, "2024-01-01T00:00:00Z", None)
    again = await state.open_transaction("idem", "CP", 1, "T", 0, "2024-01-01T00:00:00Z", None)
    assert opened.transaction_id == again.transaction_id == 1


def latest(**values: str) -> Effects:
    """A ``latest`` op as a MeterValues makes it, bounds of its times included."""
    stamps = [v[:27] for v in values.values()]  # processor.clock.stored's width
    e = Effects()
    e.latest("latest", {name.replace("_", "."): v for name, v in values.items()},
             oldest=min(stamps), newest=max(stamps))  # fmt: skip
    return e


async def test_the_latest_value_per_measurand_is_newest_wins(redis: Redis) -> None:
    t1, t2, t3 = (f"2024-01-01T1{h}:00:00.000000Z" for h in (1, 2, 3))
    # In order: each reading newer than anything held.
    await commit_each(redis, latest(Energy=f"{t1} Wh 1", Power=f"{t1} W 10"),
                      latest(Energy=f"{t2} Wh 2"))  # fmt: skip
    assert await redis.hgetall("latest") == {
        b"@": t2.encode(),
        b"Energy": f"{t2} Wh 2".encode(),
        b"Power": f"{t1} W 10".encode(),
    }
    # A late reading: only what it has newer than held is taken.
    await commit_each(redis, latest(Energy=f"{t1} Wh 0", Power=f"{t2} W 20", SoC=f"{t1} % 50"))
    assert await redis.hgetall("latest") == {
        b"@": t2.encode(), b"Energy": f"{t2} Wh 2".encode(), b"Power": f"{t2} W 20".encode(),
        b"SoC": f"{t1} % 50".encode()}  # fmt: skip
    # Mixed: newer than one field, older than '@'; then same time: first kept.
    await commit_each(redis, latest(Power=f"{t3} W 30"), latest(Power=f"{t3} W 31"))
    held = await redis.hgetall("latest")
    assert (held[b"@"], held[b"Power"]) == (t3.encode(), f"{t3} W 30".encode())


async def test_a_batch_larger_than_lua_can_unpack_keeps_all_its_history(redis: Redis) -> None:
    # More fields than one XADD's unpack() takes: the history goes in
    # several entries, and nothing after it (the reply lists' expiry) is lost.
    n = 4100
    stream = GroupStream(redis, "c1")
    await stream.ensure_group()
    async with redis.pipeline(transaction=False) as pipe:
        for _ in range(n):
            pipe.xadd(keys.INBOUND, {keys.ENVELOPE_FIELD: b"x"})
        ids = await pipe.execute()
    await stream.read(n, None)
    outcomes = []
    for i, entry_id in enumerate(ids):
        e = Effects()
        e.record(history.ChargerEvent("CP", "Heartbeat", "2024-01-01T12:00:00.000000Z", None, {}))
        outcomes.append(Outcome(entry_id, reply_key=keys.responses(f"CP{i % 7}"), reply=b"r",
                                effects=e))  # fmt: skip
    assert await stream.commit(outcomes) == [1] * n
    entries = await redis.xrange(keys.HISTORY)
    # 2,000 fields an entry at most.
    assert [len(fields) for _, fields in entries] == [2000, 2000, 100]
    assert await redis.pttl(keys.responses("CP0")) > 0


async def test_a_round_trip_cut_short_fails_its_readers_and_leaves_no_reply_behind(
    private_redis: RedisServer,
) -> None:
    """The connection fails before a round trip's replies arrive: every
    reader gets the (transient) error, and the connection is dropped, so
    replies that come later never answer another round trip."""
    assert private_redis.process is not None
    private_redis_pid = private_redis.process.pid
    redis = connect(private_redis.url)
    try:
        await redis.hset(keys.id_tag("A"), mapping={"status": "Accepted"})
        await redis.hset(keys.transaction(1), mapping={"charge_point_id": "CP"})
        state = RedisState(redis, 60)
        connection_class = redis.connection_pool.connection_class
        send, read = connection_class.send_packed_command, connection_class.read_response
        used: list[Any] = []

        async def stalled(self: Any, *args: Any, **kwargs: Any) -> None:
            # Redis stops before it can answer, so nothing waits in the buffer.
            os.kill(private_redis_pid, signal.SIGSTOP)
            used.append(self)
            await send(self, *args, **kwargs)

        async def cut(self: Any, *args: Any, **kwargs: Any) -> Any:
            raise RedisConnectionError("connection reset")

        connection_class.send_packed_command = stalled  # type: ignore[method-assign]
        connection_class.read_response = cut  # type: ignore[method-assign]
        try:
            results = await asyncio.gather(state.id_tag("A"), state.transaction(1),
                                           return_exceptions=True)  # fmt: skip
        finally:
            connection_class.send_packed_command = send  # type: ignore[method-assign]
            connection_class.read_response = read  # type: ignore[method-assign]
            os.kill(private_redis_pid, signal.SIGCONT)  # its replies now go out
        assert [type(r) for r in results] == [RedisConnectionError] * 2
        assert all(isinstance(r, TRANSIENT) for r in results)
        # Dropped: redis-py's own check when the pool hands it out again
        # catches stale replies only if they have arrived by then.
        [connection] = used
        assert not connection.is_connected
        # Answered by their own replies, not by the stalled round's.
        assert await state.transaction(1) == {"charge_point_id": "CP"}
        assert await state.id_tag("A") == (IdTagRecord("Accepted", None, None), None)
    finally:
        await redis.aclose()


@pytest.mark.parametrize("protocol", [2, 3])
async def test_raw_reads_understand_both_resp_versions(redis_db: str, protocol: int) -> None:
    """The raw round trips parse what each RESP version sends: maps in 3,
    flat lists in 2 (redis-py's default before 8)."""
    redis = connect(f"{redis_db}?protocol={protocol}")
    try:
        await redis.hset(keys.id_tag("A"), mapping={"status": "Accepted"})
        await redis.set(keys.id_tag_active("A"), "7")
        await redis.sadd(keys.KNOWN_CHARGE_POINTS, "CP")
        state = RedisState(redis, 60)
        assert await state.id_tag("A") == (IdTagRecord("Accepted", None, None), 7)
        assert await state.is_known_charger("CP") is True
        opened = await state.open_transaction("idem", "CP", 1, "A", 0, "2024-01-01T00:00:00Z", None)
        assert await state.transaction(opened.transaction_id) == {
            "charge_point_id": "CP", "connector_id": "1", "id_tag": "A", "meter_start": "0",
            "start_timestamp": "2024-01-01T00:00:00Z"}  # fmt: skip

        stream = GroupStream(redis, "c1")
        await stream.ensure_group()
        await redis.xadd(keys.INBOUND, {"e": b"envelope", "tp": b"traceparent"})
        await redis.xadd(keys.INBOUND, {"x": b"not ours"})
        first, second = await stream.read(10, 100)
        assert (first.raw, first.traceparent) == (b"envelope", b"traceparent")
        assert (second.raw, second.traceparent) == (b"", b"")
        assert await stream.read(10, None) == []
        # Our own pending ones, read again from the start; one deleted
        # meanwhile comes back with no fields, so with no envelope.
        await redis.xdel(keys.INBOUND, first.entry_id)
        again = await stream.read(10, None, start=b"0")
        assert [(d.entry_id, d.raw) for d in again] == [
            (first.entry_id, b""), (second.entry_id, b"")]  # fmt: skip
    finally:
        await redis.aclose()


async def test_a_redis_that_stops_answering_times_a_round_trip_out(
    private_redis: RedisServer,
) -> None:
    """One bound for the whole round trip, the connection's socket timeout:
    a stopped Redis fails its readers with a (transient) timeout that says
    so, and they read again once it runs."""
    assert private_redis.process is not None
    pid = private_redis.process.pid
    redis = connect(f"{private_redis.url}?socket_timeout=0.3")
    try:
        await redis.hset(keys.id_tag("A"), mapping={"status": "Accepted"})
        state = RedisState(redis, 60)
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(RedisTimeoutError, match="no reply from Redis within 0.3 s"):
                await state.id_tag("A")
        finally:
            os.kill(pid, signal.SIGCONT)
        assert issubclass(RedisTimeoutError, TRANSIENT)
        assert await state.id_tag("A") == (IdTagRecord("Accepted", None, None), None)
    finally:
        await redis.aclose()


async def test_last_seen_never_moves_back(redis: Redis) -> None:
    state = RedisState(redis, 60)
    t1, t2 = "2024-01-01T10:00:00.000000Z", "2024-01-01T11:00:00.000000Z"
    await state.mark_seen({"CP1": t2, "CP2": t1})
    await state.mark_seen({"CP1": t1})  # a replica writing late
    assert await redis.hget(keys.charge_point("CP1"), "last_seen") == t2.encode()
    assert await redis.hget(keys.charge_point("CP2"), "last_seen") == t1.encode()
