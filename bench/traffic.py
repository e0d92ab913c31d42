"""The bench client's two halves: a load generator that LPUSHes pre-encoded
Heartbeat CALL envelopes onto ``ocpp:requests`` (as fast as it can, or paced
at an offered rate), and a collector that pops the replies from every
``ocpp:responses:{id}`` list and checks each message got exactly one.

Both are built so the client costs little next to the system under test:
envelopes are encoded before the clock starts and pushed many per LPUSH;
replies are popped either by sweeping every reply list with ``RPOP key COUNT``
in one pipeline at a fixed poll interval (throughput: the cost is per sweep,
not per reply) or with one ``BLMPOP ... COUNT`` over all the lists (latency:
each reply is timed as it lands).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec
import redis

from processor import keys

# Envelopes per LPUSH when sending as fast as possible.
CHUNK = 1000
# Replies popped from one list per BLMPOP.
POP_COUNT = 10_000
# How long one BLMPOP blocks before the collector checks on the services.
BLOCK_S = 0.5


class BenchFailure(Exception):
    """Raised when the system under test lost, doubled or garbled a reply,
    or a service died, or a phase ran past its deadline."""


class _ReplyHead(msgspec.Struct):
    charge_point_id: str
    message_type: int
    message_id: str


_reply_decoder = msgspec.json.Decoder(_ReplyHead)


def charge_point_ids(count: int) -> list[str]:
    return [f"BENCH-CP-{k:04d}" for k in range(count)]


def heartbeats(phase: str, count: int, charge_points: Sequence[str]) -> list[bytes]:
    """``count`` Heartbeat CALL envelopes with message ids ``{phase}{i}``,
    message ``i`` from charger ``i % len(charge_points)``."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = []
    for i in range(count):
        mid = f"{phase}{i}"
        out.append(
            msgspec.json.encode(
                {
                    "charge_point_id": charge_points[i % len(charge_points)],
                    "message_type": 2,
                    "message_id": mid,
                    "action": "Heartbeat",
                    "payload": [2, mid, "Heartbeat", {}],
                    "timestamp": ts,
                }
            )
        )
    return out


@dataclass
class Tracker:
    """Replies seen for one phase: each message id exactly once, on the
    right charger's list, as a CALLRESULT; latencies if send times are kept,
    and the replies themselves if ``keep`` (checked once the clock stops).
    Message ``i`` is from charger ``routes[i]``, or ``i % len(charge_points)``."""

    phase: str
    expected: int
    charge_points: Sequence[str]
    sent_at: list[float] | None = None
    routes: Sequence[int] | None = None
    keep: bool = False
    received: int = 0
    first_at: float = 0.0
    last_at: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._seen = bytearray(self.expected)
        self._keys = [keys.responses(cp).encode() for cp in self.charge_points]
        self.replies: list[bytes | None] = [None] * self.expected if self.keep else []

    @property
    def done(self) -> bool:
        return self.received >= self.expected

    def add(self, key: bytes, replies: Sequence[bytes], at: float) -> None:
        """Record ``replies`` popped from list ``key`` at time ``at``."""
        for raw in replies:
            i = self._index(raw)
            route = self.routes[i] if self.routes is not None else i % len(self._keys)
            if self._keys[route] != key:
                raise BenchFailure(f"reply to {self.phase}{i} on the wrong list {key!r}")
            if self._seen[i]:
                raise BenchFailure(f"second reply to message {self.phase}{i}")
            self._seen[i] = 1
            if self.keep:
                self.replies[i] = raw
            if self.sent_at is not None:
                self.latencies.append(at - self.sent_at[i])
        if self.received == 0:
            self.first_at = at
        self.received += len(replies)
        self.last_at = at

    def _index(self, raw: bytes) -> int:
        try:
            head = _reply_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise BenchFailure(f"undecodable reply {raw[:200]!r}: {exc}") from None
        if head.message_type != 3:
            raise BenchFailure(f"expected a CALLRESULT, got {raw[:200]!r}")
        mid = head.message_id
        if not mid.startswith(self.phase) or not mid[len(self.phase) :].isdigit():
            raise BenchFailure(f"reply to a message this phase never sent: {raw[:200]!r}")
        i = int(mid[len(self.phase) :])
        if i >= self.expected:
            raise BenchFailure(f"reply to a message this phase never sent: {raw[:200]!r}")
        return i


class ReplyLists:
    """Every charger's reply list, popped over one dedicated connection with
    commands packed once up front, so polling costs the client little."""

    def __init__(self, client: redis.Redis, charge_points: Sequence[str]) -> None:
        self._pool = client.connection_pool
        # Typed Any: redis-py leaves the raw connection methods unannotated.
        self._conn = cast(Any, self._pool.get_connection())
        names = [keys.responses(cp) for cp in charge_points]
        self._sweep = self._conn.pack_commands([("RPOP", k, POP_COUNT) for k in names])
        self._keys = [k.encode() for k in names]
        self._wait = self._conn.pack_command(
            "BLMPOP", BLOCK_S, len(names), *names, "RIGHT", "COUNT", POP_COUNT
        )

    def sweep(self) -> list[tuple[bytes, list[bytes]]]:
        """Pop everything on every list, in one round trip."""
        self._conn.send_packed_command(self._sweep)
        out = []
        for key in self._keys:
            replies = self._conn.read_response()
            if replies:
                out.append((key, replies))
        return out

    def wait(self) -> tuple[bytes, list[bytes]] | None:
        """Pop from the first list that has replies, blocking up to BLOCK_S."""
        self._conn.send_packed_command(self._wait)
        got = self._conn.read_response(timeout=BLOCK_S + 5)
        return (got[0], got[1]) if got else None

    def close(self) -> None:
        self._pool.release(self._conn)


def collect(
    lists: ReplyLists,
    tracker: Tracker,
    deadline: float,
    check: Callable[[], None],
    poll_s: float | None = None,
) -> None:
    """Pop replies until every message has one, or fail at ``deadline``.

    With ``poll_s``, sweep all lists every ``poll_s`` seconds (cheap at high
    rates, the end time is known to within ``poll_s``); without it, block in
    BLMPOP (each reply's receipt timed as it lands, for latency). ``check``
    runs between polls, or whenever BLMPOP times out; it should raise if a
    service died."""
    while not tracker.done:
        started = time.perf_counter()
        if poll_s is None:
            got = lists.wait()
            now = time.perf_counter()
            if got is not None:
                tracker.add(got[0], got[1], now)
                # A commit pushes to many lists at once: what else landed is
                # popped in one sweep, not one BLMPOP round trip a list, so
                # the collector keeps up with the rate it measures. Timed at
                # the sweep's return: late by at most its round trip.
                if not tracker.done:
                    batches = lists.sweep()
                    now = time.perf_counter()
                    for key, replies in batches:
                        tracker.add(key, replies, now)
            else:
                check()
        else:
            batches = lists.sweep()
            now = time.perf_counter()
            for key, replies in batches:
                tracker.add(key, replies, now)
            check()
            if not tracker.done:
                time.sleep(max(0.0, started + poll_s - time.perf_counter()))
        if now > deadline and not tracker.done:
            raise BenchFailure(
                f"phase {tracker.phase!r}: {tracker.received} of {tracker.expected} "
                "replies before the deadline"
            )


def stray_replies(client: redis.Redis, charge_points: Sequence[str]) -> int:
    """How many replies sit on the reply lists (after a phase: extras)."""
    pipe = client.pipeline(transaction=False)
    for cp in charge_points:
        pipe.llen(keys.responses(cp))
    return sum(int(n) for n in pipe.execute())


class Sender(threading.Thread):
    """Pushes ``envelopes`` onto ``ocpp:requests`` from its own connection:
    at ``rate`` messages per second, or as fast as it can when ``rate`` is
    None. Records in ``sent_at[i]`` the time just before the LPUSH carrying
    envelope ``i``."""

    def __init__(self, url: str, envelopes: Sequence[bytes], rate: float | None) -> None:
        super().__init__(name="bench-sender", daemon=True)
        self._client = redis.Redis.from_url(url)
        self._envelopes = envelopes
        self._rate = rate
        self.sent_at = [0.0] * len(envelopes)
        self.started_at = 0.0
        self.finished_at = 0.0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        try:
            self.started_at = time.perf_counter()
            if self._rate is None:
                self._flood()
            else:
                self._paced(self._rate)
            self.finished_at = time.perf_counter()
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self._client.close()

    def _push(self, start: int, end: int) -> None:
        now = time.perf_counter()
        for i in range(start, end):
            self.sent_at[i] = now
        self._client.lpush(keys.REQUESTS, *self._envelopes[start:end])

    def _flood(self) -> None:
        for start in range(0, len(self._envelopes), CHUNK):
            if self._stop_event.is_set():
                return
            self._push(start, min(start + CHUNK, len(self._envelopes)))

    def _paced(self, rate: float) -> None:
        # Message i is due at t0 + i / rate; whatever is due goes in one
        # LPUSH, so a late wake-up catches up instead of drifting.
        n = len(self._envelopes)
        t0 = self.started_at
        sent = 0
        while sent < n and not self._stop_event.is_set():
            now = time.perf_counter()
            due = min(n, int((now - t0) * rate) + 1)
            if due > sent:
                self._push(sent, due)
                sent = due
            else:
                time.sleep(max(0.0, t0 + sent / rate - now))
