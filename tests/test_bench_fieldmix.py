"""The bench's field mix: its proportions, coherent sessions, distinct
timestamps, payloads valid as the processor decodes them, and the reply
check that fails a run; with the bare baseline's replies as the system.
Then the benches that keep history, run small on the real thing: bench.e2e
with the archiver and PostgreSQL, and bench.memory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis

from bench import history
from bench.baseline_bare import reply_for
from bench.fieldmix import FIELD_MIX, Fleet, Phase, check_replies
from bench.memory import family
from bench.traffic import Tracker
from processor import envelope, keys
from processor.v16.handlers import ROUTES
from processor.v16.messages import MeterValues, StartTransaction, StopTransaction

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
STAMP = "2025-06-01T12:00:00.000Z"
CHARGERS = [f"CP{k}" for k in range(7)]


def answered(phase: Phase) -> list[bytes]:
    """Open the phase's sessions as a system would (the bare consumer's
    replies), then render it."""
    opening, _ = phase.opening(STAMP)
    phase.bind([_reply(e) for e in opening])
    return phase.envelopes(STAMP)


def _reply(raw: bytes) -> bytes:
    out = reply_for(raw, STAMP)
    assert out is not None
    return out[1]


def decoded(raw: bytes) -> tuple[str, str, Any]:
    """(charger, action, payload) as the processor decodes the envelope."""
    env = envelope.decode(raw, 65536)
    assert isinstance(env.payload, envelope.Call) and env.action == env.payload.action
    return (
        env.charge_point_id,
        env.payload.action,
        ROUTES[env.action].decoder.decode(env.payload.payload),
    )


def test_every_100_messages_of_a_charger_hold_the_field_mix() -> None:
    fleet = Fleet(CHARGERS, now=NOW)
    phase = fleet.phase("t", 3 * 100 * len(CHARGERS) + 5)  # not a whole number of cycles
    assert set(phase.actions) == set(FIELD_MIX)
    by_charger: dict[int, list[str]] = defaultdict(list)
    for p in phase.messages:
        by_charger[p.charger].append(p.action)
    for actions in by_charger.values():
        for start in range(0, 200, 37):  # any window: the cycle has no seam
            assert Counter(actions[start : start + 100]) == FIELD_MIX
    # Message i comes from charger i % K, as the reply check expects.
    assert [p.charger for p in phase.messages[:9]] == [0, 1, 2, 3, 4, 5, 6, 0, 1]


def test_sessions_start_at_times_spread_over_the_cycle() -> None:
    phase = Fleet(CHARGERS, now=NOW).phase("t", 100 * len(CHARGERS))
    # The step (message of its charger) at which each charger starts a session.
    steps = [i // len(CHARGERS) for i in phase.starts]
    assert max(Counter(steps).values()) <= 2
    assert len(phase.starts) == 4 * len(CHARGERS)


def test_every_payload_is_valid_as_the_processor_decodes_it() -> None:
    fleet = Fleet(CHARGERS, now=NOW)
    for name in ("a", "b"):
        for raw in answered(fleet.phase(name, 1500)):
            cp, action, payload = decoded(raw)
            if isinstance(payload, MeterValues):
                [reading] = payload.meter_value
                assert len(reading.sampled_value) == 7


def test_sessions_are_coherent_across_phases() -> None:
    fleet = Fleet(CHARGERS, now=NOW)
    phases = [fleet.phase(name, 700) for name in ("a", "b", "c")]
    envelopes = [e for phase in phases for e in answered(phase)]
    open_session: dict[str, StartTransaction] = {}
    ids: dict[str, int] = {}
    # Chargers that begin inside a session: opened by the first opening only.
    for p in phases[0].preopened:
        assert isinstance(p.payload, StartTransaction) and p.session is not None
        open_session[CHARGERS[p.charger]] = p.payload
        ids[CHARGERS[p.charger]] = p.session.transaction_id or 0
    assert phases[0].preopened and not phases[1].preopened
    authorized: dict[str, str] = {}
    register: dict[str, float] = {}
    sessions = 0
    for raw in envelopes:
        cp, action, p = decoded(raw)
        if action == "Authorize":
            authorized[cp] = p.id_tag
        elif isinstance(p, StartTransaction):
            assert cp not in open_session and authorized.pop(cp) == p.id_tag
            open_session[cp] = p
            ids[cp] = msgspec.json.decode(_reply(raw))["payload"][2]["transactionId"]
        elif isinstance(p, MeterValues):
            assert p.transaction_id == (ids[cp] if cp in open_session else None)
            energy = float(p.meter_value[0].sampled_value[0].value)
            assert energy >= register.get(cp, 0)
            register[cp] = energy
        elif isinstance(p, StopTransaction):
            start = open_session.pop(cp)
            assert p.transaction_id == ids.pop(cp)
            assert p.id_tag == start.id_tag and p.meter_stop > start.meter_start
            sessions += 1
    # 300 messages a charger: three whole cycles of four sessions each,
    # less those still open at the end, plus those open at the beginning.
    assert sessions == 3 * 4 * len(CHARGERS) - len(open_session) + len(phases[0].preopened)


def test_timestamps_are_distinct_past_and_rising_per_charger() -> None:
    fleet = Fleet(CHARGERS, now=NOW)
    seen: set[datetime] = set()
    last: dict[str, datetime] = {}
    for raw in answered(fleet.phase("t", 2000)):
        cp, action, p = decoded(raw)
        when = getattr(p, "timestamp", None)
        if isinstance(p, MeterValues):
            when = p.meter_value[0].timestamp
        if when is None:
            continue
        assert when not in seen and when < NOW and (cp not in last or when > last[cp])
        assert when.microsecond % 1000 == 0
        seen.add(when)
        last[cp] = when


def test_a_phase_cannot_be_rendered_before_its_sessions_have_ids() -> None:
    phase = Fleet(CHARGERS, now=NOW).phase("t", 700)
    with pytest.raises(ValueError, match="no transactionId"):
        phase.envelopes(STAMP)


def test_the_reply_check_passes_right_replies_and_names_wrong_ones() -> None:
    phase = Fleet(CHARGERS, now=NOW).phase("t", 700)
    replies = [_reply(e) for e in answered(phase)]
    assert check_replies(phase, replies) == []

    start = phase.starts[0]
    wrong: list[bytes | None] = list(replies)
    wrong[0] = None
    wrong[1] = replies[2]  # another message's reply
    other = msgspec.json.decode(replies[start])
    other["payload"][2]["transactionId"] += 1
    wrong[start] = msgspec.json.encode(other)
    beat = next(i for i, p in enumerate(phase.messages) if p.action == "Heartbeat")
    wrong[beat] = replies[beat].replace(b"currentTime", b"current")
    problems = check_replies(phase, wrong)
    assert len(problems) == 4
    assert "no reply" in problems[0] and "answers 't2'" in problems[1]
    assert any("its opening got" in x for x in problems)
    assert any("Heartbeat" in x and "unknown field `current`" in x for x in problems)


def test_the_tracker_routes_each_message_to_its_charger_and_keeps_the_reply() -> None:
    tracker = Tracker("to", 2, CHARGERS, routes=[3, 5], keep=True)
    reply = b'{"charge_point_id":"CP5","message_type":3,"message_id":"to1","payload":[3,"to1",{}]}'
    tracker.add(b"ocpp:responses:CP5", [reply], 1.0)
    assert tracker.replies == [None, reply]


def test_heartbeat_mix_is_heartbeats_from_every_charger_in_turn() -> None:
    phase = Fleet(CHARGERS, "heartbeat", now=NOW).phase("h", 20)
    assert phase.actions == Counter({"Heartbeat": 20}) and not phase.starts
    assert [decoded(e)[0] for e in phase.envelopes(STAMP)][:8] == [*CHARGERS, CHARGERS[0]]


def test_a_phase_split_by_action_keeps_each_message_and_its_charger() -> None:
    phase = Fleet(CHARGERS, now=NOW).phase("t", 700)
    answered(phase)
    part = phase.only("x", "StopTransaction")
    assert part.routes == [p.charger for p in phase.messages if p.action == "StopTransaction"]
    replies = [_reply(e) for e in part.envelopes(STAMP)]
    assert len(replies) == 28 and check_replies(part, replies) == []


def test_the_backlog_is_what_the_archivers_have_not_acknowledged(redis_db: str) -> None:
    client = redis.Redis.from_url(redis_db)
    client.xgroup_create(keys.HISTORY, keys.ARCHIVERS, id="0", mkstream=True)
    ids = [client.xadd(keys.HISTORY, {"f": b"x"}) for _ in range(3)]
    assert history.backlog(client) == 3
    client.xreadgroup(keys.ARCHIVERS, "a", {keys.HISTORY: ">"}, count=2)
    assert history.backlog(client) == 3  # 1 unread, 2 pending
    client.xack(keys.HISTORY, keys.ARCHIVERS, *ids[:2])
    assert history.backlog(client) == 1
    client.close()


def test_key_families_hide_chargers_numbers_and_idempotency_content() -> None:
    idem = keys.transaction_idempotency("BENCH-CP-0001", 1, "T00001S00000002", 5, "2025")
    assert family(idem) == "ocpp:txn:idem:{...}"
    assert family(keys.connector("BENCH-CP-0042", 1)) == "ocpp:cp:{cp}:connector:{n}"
    assert family(keys.transaction(123)) == "ocpp:txn:{n}"


def _bench(module: str, args: list[str], redis_url: str, database_url: str) -> str:
    """Run ``python -m module args`` on the test's Redis and PostgreSQL; its stdout."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url}
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, cwd=root, env=env, timeout=50)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_e2e_bench_runs_ours_with_the_archiver_and_times_history(
    redis_db: str, postgres_db: str
) -> None:
    out = _bench(
        "bench.e2e",
        ["--mix", "field", "--no-baseline", "--processors", "1", "--messages", "2000",
         "--warmup", "200", "--charge-points", "20", "--rates", "2000", "--duration", "0.25"],
        redis_db, postgres_db,
    )  # fmt: skip
    committed = next(x for x in out.splitlines() if x.startswith("throughput with history"))
    assert float(committed.split()[-1].replace(",", "")) > 0
    assert "    archiver " in out and "archiver lag bounded" in out
    # The run checked PostgreSQL's rows against what it sent (or it fails).
    assert "PostgreSQL at the end, as expected from what was sent: meter_values" in out


def test_the_memory_bench_reads_redis_after_10_percent_and_at_the_end(
    redis_db: str, postgres_db: str
) -> None:
    out = _bench(
        "bench.memory",
        ["--messages", "3000", "--chargers", "30", "--chunk", "1000", "--ttl", "5"],
        redis_db, postgres_db,
    )  # fmt: skip
    assert "OCPP_CLOSED_TRANSACTION_TTL_S=OCPP_IDEMPOTENCY_TTL_S=5" in out
    assert "used_memory at the end / after 10%:" in out
    assert "hash ocpp:cp:{cp}:connector:{n}:latest" in out


def test_redis_memory_stays_flat_as_messages_go_through(redis_db: str, postgres_db: str) -> None:
    # The memory bound itself, small: 50,000 field-mix messages from 200
    # chargers, a TTL shorter than the first reading takes, so both readings
    # hold what is per charger and at most a TTL of sessions.
    out = _bench(
        "bench.memory",
        ["--messages", "50000", "--chargers", "200", "--chunk", "5000", "--ttl", "1"],
        redis_db, postgres_db,
    )  # fmt: skip
    line = next(x for x in out.splitlines() if x.startswith("used_memory at the end"))
    ratio = float(line.split(":")[1].split("x")[0])
    assert ratio <= 1.5, out
