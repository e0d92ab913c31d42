"""The bench's field mixes, OCPP 1.6's and 2.0.1's: their proportions,
coherent sessions, distinct timestamps, payloads valid as the processor
decodes them and against the official schemas, and the reply check that
fails a run; with the bare baseline's replies as the system. Then the
benches that keep history, run small on the real thing: bench.e2e with the
archiver and PostgreSQL, and bench.memory."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import ocpp
import pytest
import redis

from bench import history
from bench.baseline_bare import reply_for
from bench.fieldmix import FIELD_MIX, Fleet, FleetBase, Phase, check_replies
from bench.fieldmix201 import ENDED, FIELD201_MIX, STARTED, UPDATED, Fleet201
from bench.memory import family
from bench.traffic import Tracker
from processor import envelope, keys
from processor.protocols import OCPP201, protocols
from processor.v16.messages import MeterValues, StartTransaction, StopTransaction
from processor.v201 import messages as v201

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
STAMP = "2025-06-01T12:00:00.000Z"
CHARGERS = [f"CP{k}" for k in range(7)]
MIXES = {"field": FIELD_MIX, "field201": FIELD201_MIX}
# A session's start, in either mix; the sampled values a reading of each label holds.
STARTS = ("StartTransaction", STARTED)
SAMPLES = {"MeterValues": 7, UPDATED: 7, STARTED: 1, ENDED: 1}


def fleet(mix: str) -> FleetBase:
    return Fleet201(CHARGERS, now=NOW) if mix == "field201" else Fleet(CHARGERS, now=NOW)


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
    """(charger, action, payload) as the processor decodes the envelope, in
    the OCPP version it names."""
    env = envelope.decode(raw, 65536)
    assert isinstance(env.payload, envelope.Call) and env.action == env.payload.action
    protocol = protocols().of(env.protocol)
    assert protocol is not None
    return (
        env.charge_point_id,
        env.payload.action,
        protocol.routes[env.action].decoder.decode(env.payload.payload),
    )


@functools.cache
def schema(protocol: str | None, name: str) -> jsonschema.protocols.Validator:
    """The official JSON schema ``name`` of that OCPP version (None: 1.6)."""
    version = "v201" if protocol == OCPP201 else "v16"
    loaded = json.loads((Path(ocpp.__file__).parent / version / "schemas" / f"{name}.json")
                        .read_text())  # fmt: skip
    cls = jsonschema.validators.validator_for(loaded)
    return cls(loaded, format_checker=cls.FORMAT_CHECKER)


def schema_errors(protocol: str | None, name: str, payload: Any) -> list[str]:
    return [e.message for e in schema(protocol, name).iter_errors(payload)]


@pytest.mark.parametrize("mix", MIXES)
def test_every_100_messages_of_a_charger_hold_the_field_mix(mix: str) -> None:
    phase = fleet(mix).phase("t", 3 * 100 * len(CHARGERS) + 5)  # not a whole number of cycles
    assert set(phase.actions) == set(MIXES[mix])
    by_charger: dict[int, list[str]] = defaultdict(list)
    for p in phase.messages:
        by_charger[p.charger].append(p.label)
    for actions in by_charger.values():
        for start in range(0, 200, 37):  # any window: the cycle has no seam
            assert Counter(actions[start : start + 100]) == MIXES[mix]
    # Message i comes from charger i % K, as the reply check expects.
    assert [p.charger for p in phase.messages[:9]] == [0, 1, 2, 3, 4, 5, 6, 0, 1]


@pytest.mark.parametrize("mix", MIXES)
def test_sessions_start_at_times_spread_over_the_cycle(mix: str) -> None:
    phase = fleet(mix).phase("t", 100 * len(CHARGERS))
    # The step (message of its charger) at which each charger starts a session.
    starts = [i for i, p in enumerate(phase.messages) if p.label in STARTS]
    steps = [i // len(CHARGERS) for i in starts]
    assert max(Counter(steps).values()) <= 2
    assert len(starts) == 4 * len(CHARGERS)
    # Only 1.6's are opened first (the system assigns their ids).
    assert phase.starts == (starts if mix == "field" else [])


@pytest.mark.parametrize("mix", MIXES)
def test_every_payload_is_valid_as_the_processor_decodes_it_and_by_its_schema(mix: str) -> None:
    fleet_ = fleet(mix)
    for name in ("a", "b"):
        phase = fleet_.phase(name, 1500)
        for p, raw in zip(phase.messages, answered(phase), strict=True):
            cp, action, payload = decoded(raw)
            assert action == p.action and cp == CHARGERS[p.charger]
            body = json.loads(raw)["payload"][3]
            name_ = f"{action}Request" if phase.protocol == OCPP201 else action
            assert schema_errors(phase.protocol, name_, body) == [], (name_, body)
            readings = getattr(payload, "meter_value", None)
            if p.label in SAMPLES:
                [reading] = readings
                assert len(reading.sampled_value) == SAMPLES[p.label]
            else:
                assert readings is None


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


@pytest.mark.parametrize("mix", MIXES)
def test_timestamps_are_distinct_past_and_rising_per_charger(mix: str) -> None:
    seen: set[datetime] = set()
    last: dict[str, datetime] = {}
    for raw in answered(fleet(mix).phase("t", 2000)):
        cp, action, p = decoded(raw)
        when = getattr(p, "timestamp", None)
        if getattr(p, "meter_value", None):
            # A reading is taken when its message is sent.
            assert when is None or when == p.meter_value[0].timestamp
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


def test_2_0_1_sessions_are_coherent_across_phases() -> None:
    fleet_ = Fleet201(CHARGERS, now=NOW)
    phases = [fleet_.phase(name, 700) for name in ("a", "b", "c")]
    # The station names its transactions: nothing is opened first.
    assert not any(phase.starts or phase.preopened for phase in phases)
    authorized: dict[str, str] = {}
    open_session: dict[str, tuple[str, float | None]] = {}  # tid, begin register
    seq: dict[str, int] = {}
    register: dict[str, float] = {}
    sessions = joined = 0
    for raw in (e for phase in phases for e in phase.envelopes(STAMP)):
        assert list(json.loads(raw))[-1] == "protocol"  # after the contract's fields
        cp, action, p = decoded(raw)
        if action == "Authorize":
            authorized[cp] = p.id_token.id_token
        if action == "StatusNotification":
            # Occupied from the EV's arrival (before its Started) until it leaves.
            assert p.connector_status in ("Available", "Occupied")
            assert p.connector_status == "Occupied" or cp not in open_session
        if action != "TransactionEvent":
            continue
        tid, info = p.transaction_info.transaction_id, p.transaction_info
        [reading] = p.meter_value
        energy, *_ = reading.sampled_value
        assert energy.measurand == "Energy.Active.Import.Register" and energy.value >= 0
        assert energy.value >= register.get(cp, 0) and reading.timestamp == p.timestamp
        register[cp] = energy.value
        if p.event_type == "Started":
            assert cp not in open_session and tid not in seq and p.seq_no == 0
            assert p.id_token == v201.IdTokenType(id_token=authorized.pop(cp), type="ISO14443")
            assert p.evse == v201.EVSEType(id=1, connector_id=1)
            assert energy.context == "Transaction.Begin" and info.charging_state == "EVConnected"
            open_session[cp] = (tid, energy.value)
        else:
            if cp not in open_session:  # begun before the bench: joined, never started
                assert tid not in seq and p.seq_no > 0
                joined += 1
                open_session[cp], seq[tid] = (tid, None), p.seq_no - 1
            assert open_session[cp][0] == tid and p.seq_no == seq[tid] + 1
            assert p.evse is None and p.id_token is None
        seq[tid] = p.seq_no
        if p.event_type == "Updated":
            assert energy.context == "Sample.Periodic" and len(reading.sampled_value) == 7
            # chargingState only when it changed; no power but while charging.
            assert (info.charging_state is None) == (p.trigger_reason == "MeterValuePeriodic")
            power = reading.sampled_value[1]
            assert power.measurand == "Power.Active.Import"
            assert (power.value > 0) == (info.charging_state in (None, "Charging"))
        if p.event_type == "Ended":
            _, begin = open_session.pop(cp)
            assert energy.context == "Transaction.End" and info.stopped_reason == "EVDisconnected"
            assert begin is None or energy.value > begin
            sessions += 1
    assert all(len(tid) <= 36 and tid.startswith("CP") for tid in seq)
    assert joined and sessions == 3 * 4 * len(CHARGERS) - len(open_session) + joined


def test_the_reply_check_holds_2_0_1_replies_to_2_0_1_responses() -> None:
    phase = Fleet201(CHARGERS, now=NOW).phase("t", 700)
    replies = [_reply(e) for e in phase.envelopes(STAMP)]
    assert check_replies(phase, replies) == []
    # The bare consumer's replies are valid against the official schemas.
    for p, raw in zip(phase.messages, replies, strict=True):
        body = json.loads(raw)["payload"][2]
        assert schema_errors(OCPP201, f"{p.action}Response", body) == [], (p.label, body)

    started = next(i for i, p in enumerate(phase.messages) if p.label == STARTED)
    authorize = next(i for i, p in enumerate(phase.messages) if p.action == "Authorize")
    wrong: list[bytes | None] = list(replies)
    wrong[started] = replies[started].replace(b'{"idTokenInfo":{"status":"Accepted"}}', b"{}")
    # 1.6's answer to an Authorize is no 2.0.1 one.
    wrong[authorize] = replies[authorize].replace(b"idTokenInfo", b"idTagInfo")
    problems = check_replies(phase, wrong)
    assert len(problems) == 2
    assert any(STARTED in x and "no idTokenInfo" in x for x in problems)
    assert any("Authorize" in x and "idTagInfo" in x for x in problems)


def test_the_rows_a_2_0_1_phase_makes_are_its_readings_events_and_sessions() -> None:
    phase = Fleet201(CHARGERS, now=NOW).phase("t", 100 * len(CHARGERS))  # a cycle each
    sent = history.Sent()
    sent.record(phase)
    events = 63 * len(CHARGERS)
    tids = {(CHARGERS[p.charger], p.payload.transaction_info.transaction_id)
            for p in phase.messages if p.action == "TransactionEvent"}  # fmt: skip
    # A periodic Updated (no chargingState) makes meter rows but no event row.
    telling = [p.payload for p in phase.messages if p.action == "TransactionEvent"
               and (p.payload.event_type != "Updated"
                    or p.payload.transaction_info.charging_state is not None)]  # fmt: skip
    assert 8 * len(CHARGERS) < len(telling) < events // 2
    assert sent.expected() == {
        "meter_values": events,
        "sampled values": (7 * 55 + 4 + 4) * len(CHARGERS),
        "transactions": 0,
        "transactions stopped": 0,
        "meter_values with transaction_ref": events,
        "transaction_events": len(telling),
        "transactions_v201": len(tids),
        "transactions_v201 started, with meter_start": 4 * len(CHARGERS),
        "transactions_v201 stopped, with meter_stop": 4 * len(CHARGERS),
        "charger_events": 16 * len(CHARGERS),
        "anomalies": 0,
        "dead_letters": 0,
    }


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
        ["--mix", "field,field201", "--no-baseline", "--processors", "1", "--messages", "2000",
         "--warmup", "200", "--charge-points", "20", "--rates", "2000", "--duration", "0.25"],
        redis_db, postgres_db,
    )  # fmt: skip
    committed = [x for x in out.splitlines() if x.startswith("throughput with history")]
    assert len(committed) == 2 and all(float(x.split()[-1].replace(",", "")) > 0
                                       for x in committed)  # fmt: skip
    assert "    archiver " in out and "archiver lag bounded" in out
    # The run checked PostgreSQL's rows against what it sent (or it fails),
    # each mix on a PostgreSQL of its own.
    assert "PostgreSQL at the end, as expected from what was sent: meter_values" in out
    v201 = "PostgreSQL at the end of field201, as expected from what was sent: meter_values"
    assert v201 in out and "transaction_events" in out.split(v201)[1].splitlines()[0]
    assert "  field201 / field: " in out and "-> within 10%: " in out


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
