"""Back end -> charge point: envelopes from ``ocpp:responses:{id}`` to that
charger's socket, in order, for thousands of chargers over a fixed handful of
Redis connections.

Finding which of N lists is non-empty costs O(N) per look when all we have is
the lists: a BLMPOP over N keys registers and unregisters N keys on every
wake-up, and a poll checks N keys on every tick. So the gateway does not
look; Redis tells it. :class:`Notifier` turns on client-side-caching
invalidations for the key prefix on one connection (``CLIENT TRACKING ON
REDIRECT <itself> BCAST PREFIX ocpp:responses:``, subscribed to
``__redis__:invalidate``). Redis then names every reply list written to, once
per event-loop cycle, whatever ``notify-keyspace-events`` says: tracking is
always available since Redis 6 and needs no configuration. That costs O(1)
per write and nothing while idle.

:class:`Pump` is the only task that pops. It keeps the set of *dirty*
chargers (named by a notification, newly connected, or drained after being
throttled) and pops them in pipelined rounds, ``RPOP key COUNT n`` for up to
1,000 chargers per round trip; when busy it starts a round at most every
2 ms, so the notifications arriving meanwhile share it. One popper per
process keeps each charger's frames in order; a charger that got a full
``n`` stays dirty. Our own pops are writes too, so each delivery brings one
more notification and one empty RPOP, which usually rides in a round that
has work anyway. A connecting charger is marked dirty, which delivers what
was queued before it connected. With several gateways, each hears of every
reply list and ignores those of chargers it does not hold.

Notifications can be missed only while the notifier's connection is down; it
re-subscribes and then marks every connected charger dirty. A sweep every
30 s does the same, as a safety net. Where tracking is refused (an ACL, a
proxy), the pump polls every connected charger every 0.25 s instead.

Nothing popped is dropped on purpose: envelopes left in a session's outbox
when its charger disconnects, or popped for a charger that has just gone, go
back to the right end of its list (oldest nearest the end), or straight to
its new connection if it is back already. An envelope being written when the
connection drops counts as sent, as with the ws-server's pop-then-write.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import anyio
import msgspec
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ResponseError
from websockets.exceptions import ConnectionClosed

from processor import keys
from processor.redis_io import TRANSIENT, Backoff, keepalive

log = logging.getLogger(__name__)

CHANNEL: Final = "__redis__:invalidate"
POP_COUNT: Final = 64  # envelopes popped per charger per round
MAX_KEYS_PER_ROUND: Final = 1000  # RPOPs per pipeline
OUTBOX_HIGH: Final = 256  # stop popping for a charger with this many unsent
OUTBOX_LOW: Final = 64  # ... until it is down to this many
# A busy pump starts a round at most this often, so the notifications that
# arrive meanwhile share one round trip; an idle one starts at once.
MIN_ROUND_INTERVAL_S: Final = 0.002
SAFETY_SWEEP_S: Final = 30.0
POLL_S: Final = 0.25
_PREFIX: Final = keys.RESPONSES_PREFIX.encode()


class Sink(Protocol):
    """What a session writes to: a websockets connection."""

    async def send(self, message: bytes, *, text: bool | None = None) -> None: ...


class _Outbound(msgspec.Struct):
    payload: msgspec.Raw


_outbound: Final = msgspec.json.Decoder(_Outbound)


def payload_of(envelope: bytes) -> bytes | None:
    """The frame an outbound envelope carries, verbatim; None if it has none."""
    try:
        return bytes(_outbound.decode(envelope).payload)
    except msgspec.DecodeError as exc:
        log.warning("dropped an outbound envelope without a JSON payload: %s", exc)
        return None


class Session:
    """One charger's open connection and the envelopes waiting for it."""

    def __init__(self, charge_point_id: str, sink: Sink) -> None:
        self.charge_point_id = charge_point_id
        self.outbox: deque[bytes] = deque()
        self.throttled = False
        self.sent = 0
        self._sink = sink
        self._ready = anyio.Event()
        self._replaced = anyio.Event()

    @property
    def replaced(self) -> bool:
        return self._replaced.is_set()

    async def wait_replaced(self) -> None:
        await self._replaced.wait()

    def deliver(self, envelopes: Iterable[bytes]) -> None:
        self.outbox.extend(envelopes)
        self._ready.set()

    def hand_over(self, newer: Session) -> None:
        """``newer`` is the charger's new connection: it takes the unsent
        envelopes, ahead of anything it gets later, and this one stops."""
        newer.outbox.extendleft(reversed(self.outbox))
        self.outbox.clear()
        self._replaced.set()
        self._ready.set()

    async def send_loop(self, drained: Callable[[str], None]) -> None:
        """Write the outbox in order until the connection closes or is
        replaced; ``drained(id)`` when a throttled outbox has room again."""
        while not self.replaced:
            if not self.outbox:
                self._ready = anyio.Event()
                await self._ready.wait()
                continue
            envelope = self.outbox.popleft()
            frame = payload_of(envelope)
            if frame is None:
                continue
            try:
                await self._sink.send(frame, text=True)
            except ConnectionClosed:
                if not self.replaced:
                    self.outbox.appendleft(envelope)
                return
            self.sent += 1
            if self.throttled and len(self.outbox) <= OUTBOX_LOW:
                self.throttled = False
                drained(self.charge_point_id)


class Pump:
    """The registry of connected chargers and the one task popping their lists."""

    def __init__(self, redis: Redis, *, requeue_ttl_s: int) -> None:
        self.sessions: dict[str, Session] = {}
        self.rounds = 0
        self._redis = redis
        self._requeue_ttl_s = requeue_ttl_s
        self._dirty: dict[str, None] = {}  # an ordered set: first marked, first popped
        self._orphans: dict[str, list[bytes]] = {}
        self._wake = anyio.Event()
        self._sweep_interval = POLL_S
        self._sweep_due = 0.0
        self._stopping = False
        self._backoff = Backoff(log)

    # --- called by connection handlers and the notifier ----------------------

    def attach(self, session: Session) -> None:
        """Register ``session``, replacing the charger's older one if any."""
        older = self.sessions.get(session.charge_point_id)
        if older is not None:
            older.hand_over(session)
        self.sessions[session.charge_point_id] = session
        self.mark(session.charge_point_id)

    def detach(self, session: Session) -> None:
        """``session`` is closed; what it did not send goes back to Redis."""
        cp = session.charge_point_id
        if self.sessions.get(cp) is session:
            del self.sessions[cp]
        if session.outbox:
            self._orphans.setdefault(cp, []).extend(session.outbox)
            session.outbox.clear()
            self._wake.set()

    def mark(self, charge_point_id: str) -> None:
        self._dirty[charge_point_id] = None
        self._wake.set()

    def mark_all(self) -> None:
        self._dirty.update(dict.fromkeys(self.sessions))
        self._wake.set()

    def invalidated(self, names: list[bytes] | None) -> None:
        """Redis says these keys changed; None means all of them (a flush)."""
        if names is None:
            self.mark_all()
            return
        for name in names:
            if name.startswith(_PREFIX):
                cp = name[len(_PREFIX) :].decode(errors="replace")
                if cp in self.sessions:
                    self.mark(cp)

    def notifications(self, on: bool) -> None:
        """Whether invalidations are arriving; either way, look at everyone now."""
        self._sweep_interval = SAFETY_SWEEP_S if on else POLL_S
        self._sweep_due = 0.0
        self._wake.set()

    def stop(self) -> None:
        """Return from :meth:`run` once every orphan is back in Redis."""
        self._stopping = True
        self._wake.set()

    # --- the loop --------------------------------------------------------------

    async def run(self) -> None:
        last_round = -math.inf
        while not (self._stopping and not self._orphans):
            await self._idle()
            pause = last_round + MIN_ROUND_INTERVAL_S - anyio.current_time()
            if pause > 0 and not self._stopping:
                await anyio.sleep(pause)
            now = last_round = anyio.current_time()
            if now >= self._sweep_due and not self._stopping:
                self._sweep_due = now + self._sweep_interval
                self.mark_all()
            try:
                await self._round()
            except TRANSIENT as exc:
                await self._backoff.wait(exc)
                continue
            self._backoff.ok()

    async def _idle(self) -> None:
        if self._dirty or self._orphans or self._stopping:
            return
        self._wake = anyio.Event()
        with anyio.move_on_after(max(0.0, self._sweep_due - anyio.current_time())):
            await self._wake.wait()

    async def _round(self) -> None:
        requeue = self._take_orphans()
        batch = self._take_dirty()
        if not requeue and not batch:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for cp, envelopes in requeue:
                    # The oldest envelope must end up rightmost, next to be popped.
                    pipe.rpush(keys.responses(cp), *reversed(envelopes))
                    pipe.expire(keys.responses(cp), self._requeue_ttl_s, nx=True)
                for cp in batch:
                    pipe.rpop(keys.responses(cp), POP_COUNT)
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except BaseException:
            # Unknown whether Redis ran them: requeue again (a rare duplicate
            # beats a loss) and look at the batch again.
            for cp, envelopes in reversed(requeue):
                self._orphans[cp] = envelopes + self._orphans.pop(cp, [])
            self._dirty.update(dict.fromkeys(batch))
            raise
        self.rounds += 1
        for (cp, envelopes), pushed in zip(requeue, results[0 : 2 * len(requeue) : 2], strict=True):
            if isinstance(pushed, ResponseError):
                log.error("lost %d unsent envelopes for %s: %s", len(envelopes), cp, pushed)
        for cp, popped in zip(batch, results[2 * len(requeue) :], strict=True):
            if isinstance(popped, ResponseError):  # say, not a list: leave it to an operator
                log.error("cannot pop %s: %s", keys.responses(cp), popped)
            elif popped:
                self._route(cp, popped)
                if len(popped) == POP_COUNT:
                    self._dirty[cp] = None

    def _take_orphans(self) -> list[tuple[str, list[bytes]]]:
        """Orphans of chargers that are back go to them; the rest to Redis."""
        requeue = []
        for cp, envelopes in self._orphans.items():
            session = self.sessions.get(cp)
            if session is not None:
                session.deliver(envelopes)
            else:
                requeue.append((cp, envelopes))
        self._orphans.clear()
        return requeue

    def _take_dirty(self) -> list[str]:
        batch: list[str] = []
        for cp in list(self._dirty):
            if len(batch) >= MAX_KEYS_PER_ROUND:
                break
            del self._dirty[cp]
            session = self.sessions.get(cp)
            if session is None:
                continue
            if len(session.outbox) >= OUTBOX_HIGH:
                session.throttled = True  # its sender marks it again when drained
                continue
            batch.append(cp)
        return batch

    def _route(self, cp: str, envelopes: list[bytes]) -> None:
        # Behind any orphans of the same charger, which are older.
        if cp in self._orphans:
            self._orphans[cp].extend(envelopes)
        elif (session := self.sessions.get(cp)) is not None:
            session.deliver(envelopes)
        else:
            self._orphans[cp] = envelopes
            self._wake.set()


class Notifier:
    """Feeds :meth:`Pump.invalidated` from Redis's tracking invalidations.

    Owns one connection, never shared and never silently reconnected: on
    any fault it starts over (new connection, tracking, subscription) and
    has the pump look at every charger, so nothing written in the gap waits
    for the safety sweep.
    """

    def __init__(self, redis_url: str, pump: Pump) -> None:
        self._pool = ConnectionPool.from_url(redis_url, **keepalive(redis_url))
        self._pump = pump
        self._backoff = Backoff(log)
        self._scope = anyio.CancelScope()
        self.tracking = False

    def stop(self) -> None:
        self._scope.cancel()

    async def run(self) -> None:
        with self._scope:
            while True:
                # Not from the pool: a reconnect must go through _subscribe
                # again. RESP2, where invalidations come as pub/sub messages
                # on any redis-py parser (RESP3 pushes need parser hooks).
                connection: Any = self._pool.connection_class(
                    **{**self._pool.connection_kwargs, "protocol": 2}
                )
                try:
                    await connection.connect()
                    if not await self._subscribe(connection):
                        return
                    self.tracking = True
                    self._pump.notifications(True)
                    self._backoff.ok()
                    while True:
                        self._message(await connection.read_response(timeout=math.inf))
                except TRANSIENT as exc:
                    self.tracking = False
                    self._pump.notifications(False)
                    await self._backoff.wait(exc)
                finally:
                    with anyio.CancelScope(shield=True):
                        await connection.disconnect()

    async def _subscribe(self, connection: Any) -> bool:
        try:
            await connection.send_command("CLIENT", "ID")
            client_id = await connection.read_response()
            await connection.send_command(
                "CLIENT", "TRACKING", "ON", "REDIRECT", client_id,
                "BCAST", "PREFIX", keys.RESPONSES_PREFIX,
            )  # fmt: skip
            await connection.read_response()
            # Refused too when the ACL user lacks the channel (&__redis__:invalidate).
            await connection.send_command("SUBSCRIBE", CHANNEL)
            await connection.read_response()
        except ResponseError as exc:
            log.warning(
                "Redis refused CLIENT TRACKING or its channel (%s): polling every %s s", exc, POLL_S
            )
            self._pump.notifications(False)
            return False
        log.info("notified of writes to %s* by client tracking", keys.RESPONSES_PREFIX)
        return True

    def _message(self, message: object) -> None:
        if not (isinstance(message, list) and len(message) == 3 and message[0] == b"message"):
            return
        data = message[2]
        if isinstance(data, bytes):
            data = [data]
        self._pump.invalidated(data if isinstance(data, list) else None)
