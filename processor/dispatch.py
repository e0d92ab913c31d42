"""Decode -> dispatch -> outcome: what the processor does with a batch of
stream entries, free of I/O so a test can drive it without Redis.

Each :class:`Delivery` becomes an :class:`Outcome`: the reply to push, the
effects to commit, or the reason to dead-letter it. The consumer commits the
outcomes (``processor/consumer.py``); an entry whose handler failed gets no
outcome and stays pending, to be claimed and retried.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from processor import clock, envelope, frames, keys
from processor.commands import CommandRecord, reply_effects
from processor.effects import Effects
from processor.envelope import Call, Envelope, Rejected
from processor.errors import (
    InternalFailure,
    NotImplementedAction,
    NotSupportedAction,
    OcppError,
    ProtocolViolation,
    Undeliverable,
    from_validation,
)
from processor.logs import trace_fields
from processor.protocols import Protocol, Protocols
from processor.types import Context, HandlerConfig, State

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
# How long a charger's registered OCPP version is trusted before it is read
# again, for envelopes that do not name theirs; how many are held.
REGISTRATION_TTL_S = 30.0
_REGISTRATIONS_MAX = 100_000
# How often a replica writes a charger's last_seen, at most.
SEEN_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One stream entry as read or claimed, with how often it was delivered."""

    entry_id: bytes
    raw: bytes
    deliveries: int = 1
    # W3C traceparent the adapter stored with the entry; empty if none.
    traceparent: bytes = b""


@dataclass(slots=True)
class Outcome:
    """What committing one entry means; empty fields mean "nothing of that"."""

    entry_id: bytes
    reply_key: str = ""
    reply: bytes = b""
    dead_reason: str = ""
    raw: bytes = b""
    effects: Effects = field(default_factory=Effects)
    # For a reply to one of our commands: the command, as it was found, and
    # the state the reply gives it (answered or failed).
    command: CommandRecord | None = None
    command_state: str = ""
    # What was handled and how, for telemetry: the envelope once decoded,
    # and the OCPP error code when the reply is a CALLERROR.
    envelope: Envelope | None = None
    error_code: str = ""


# One charger's deliveries in a batch, in stream order.
Group = list[tuple[Delivery, Envelope]]


@dataclass(frozen=True, slots=True)
class Limits:
    max_envelope_bytes: int = 65536
    max_deliveries: int = 5
    # Chargers handled at once within a batch; one charger's messages are
    # always handled one after another, in stream order.
    concurrency: int = 64


class Dispatcher:
    """Turns deliveries into outcomes with each version's handlers in ``protocols``."""

    def __init__(
        self,
        protocols: Protocols,
        state: State,
        config: HandlerConfig,
        limits: Limits,
        transient: tuple[type[Exception], ...] = (),
    ) -> None:
        self._transient = transient
        self._protocols = protocols
        # Chargers' registered versions, for envelopes that do not say
        # (a ws-server without our extension): cp -> (version, read at).
        self._registered: dict[str, tuple[Protocol, float]] = {}
        # When the batch in hand began (time.monotonic): what ages them.
        self._batch_clock = 0.0
        self._state = state
        self._config = config
        self._limits = limits
        # Chargers whose frames are being recorded, as last read, and when.
        self._watched: frozenset[str] = frozenset()
        self._watched_at = -math.inf
        # Requests decoded to tell whether they read state, by id(frame),
        # for their handling in the same batch not to decode them again.
        self._decoded: dict[int, object] = {}
        # When this replica last wrote each charger's last_seen (monotonic),
        # and those to write before the next batch.
        self._seen: dict[str, float] = {}
        self._unsaid: dict[str, str] = {}

    async def handle_batch(
        self,
        deliveries: Iterable[Delivery],
        now: datetime,
        settled: Callable[[], Awaitable[None]] | None = None,
    ) -> list[Outcome]:
        """Outcomes for the deliveries whose handling finished; those whose
        handler raised are left out (and logged) so they stay pending.

        A ``transient`` error (the state store is unreachable) would fail
        every entry alike, so it aborts the batch instead: the first one
        raised is re-raised once every charger's handling has stopped.

        ``settled``, if given, is awaited before the first handler that reads
        state runs (the previous batch's commit, still in flight: what it
        writes must be seen); chargers whose messages read nothing are
        handled meanwhile. What it raises aborts the batch.
        """
        ts = clock.wire(now)
        self._batch_clock = time.monotonic()
        now_ms = clock.epoch_ms(now)
        if self._batch_clock - self._watched_at > frames.REFRESH_S:
            self._watched = frozenset(await self._state.watched_chargers(now_ms))
            self._watched_at = self._batch_clock
        if self._unsaid:
            await self._state.mark_seen(self._unsaid)
            self._unsaid = {}
        outcomes: dict[bytes, Outcome] = {}
        by_charger: dict[str, Group] = {}
        order: list[bytes] = []
        for d in deliveries:
            order.append(d.entry_id)
            result = self._decode(d, ts)
            if isinstance(result, Outcome):
                outcomes[d.entry_id] = result
            else:
                by_charger.setdefault(result.charge_point_id, []).append((d, result))
        aborted: list[Exception] = []

        async def run(group: Group) -> None:
            for d, env in group:
                if aborted:
                    return
                try:
                    outcomes[d.entry_id] = await self._handle(d, env, now, ts)
                except self._transient as exc:
                    aborted.append(exc)
                except Exception:
                    # Left pending: claimed and retried later, dead-lettered
                    # once OCPP_MAX_DELIVERIES is spent.
                    log.exception("handler failed for entry %s from %s",
                                  d.entry_id.decode(), env.charge_point_id,
                                  extra=trace_fields(d.traceparent))  # fmt: skip

        try:
            await self._run_groups(list(by_charger.values()), run, settled)
        finally:
            self._decoded.clear()
        if aborted:
            raise aborted[0]
        done = [outcomes[i] for i in order if i in outcomes]
        frames.tap(done, self._watched, now_ms)
        self._mark_seen(done, now)
        return done

    def _mark_seen(self, outcomes: list[Outcome], now: datetime) -> None:
        """A charger's ``last_seen``, whatever it sent (2.0.1 stations, and
        1.6 chargers busy with other messages, may send no Heartbeat for
        long): written before the next batch, at most every
        :data:`SEEN_EVERY_S` per charger by this replica, not once a
        message. Apart from the batch's effects: a refused message changes
        nothing, and a stranger refused leaves no trace."""
        stamp = ""
        for out in outcomes:
            env = out.envelope
            if env is None or out.error_code or out.dead_reason:
                continue
            cp = env.charge_point_id
            if self._batch_clock - self._seen.get(cp, -math.inf) < SEEN_EVERY_S:
                continue
            if len(self._seen) >= _REGISTRATIONS_MAX:
                self._seen.clear()
            self._seen[cp] = self._batch_clock
            stamp = stamp or clock.stored(now)
            self._unsaid[cp] = stamp

    async def _run_groups(
        self,
        groups: list[Group],
        run: Callable[[Group], Awaitable[None]],
        settled: Callable[[], Awaitable[None]] | None,
    ) -> None:
        """Run each charger's group in order; groups concurrently where it pays."""
        # A task per charger costs more than handling a message; only
        # chargers with a message whose handler waits on Redis get one.
        waiting = [g for g in groups if any(self._reads_state(env) for _, env in g)]
        in_tasks = {id(g) for g in waiting}
        for group in groups:
            if id(group) not in in_tasks:
                await run(group)
        if waiting and settled is not None:
            await settled()
        if len(waiting) < 2:
            for group in waiting:
                await run(group)
            return
        # At most ``concurrency`` workers, each taking the next group left.
        # Plain asyncio tasks (the processor runs on anyio's asyncio
        # backend): anyio's start_soon and a CapacityLimiter cost a sixth of
        # handling a field-mix batch, with dozens of chargers a batch.
        left = iter(waiting)

        async def worker() -> None:
            for group in left:
                await run(group)

        async with asyncio.TaskGroup() as tg:
            for _ in range(min(self._limits.concurrency, len(waiting))):
                tg.create_task(worker())

    def _reads_state(self, env: Envelope) -> bool:
        frame = env.payload
        if not isinstance(frame, Call):
            return True  # a reply: its command is looked up
        if env.protocol is not None:
            protocol = self._protocols.of(env.protocol)
        else:
            protocol = self._registered_version(env.charge_point_id)
            if protocol is None:
                return True  # its version is to be read
        route = protocol.routes.get(frame.action) if protocol else None
        if route is None:
            return False
        if route.reads_state_for is not None:
            try:
                request = route.decoder.decode(frame.payload)
            except msgspec.DecodeError:
                return False  # refused when handled, reading nothing
            self._decoded[id(frame)] = request
            return route.reads_state_for(env.charge_point_id, request)
        return route.reads_state

    def _spelling(self, env: Envelope | Rejected) -> Protocol:
        """The version to answer ``env`` in without reading anything: the
        one it names (the default for one we do not speak), else its
        charger's registered one if known, else the default."""
        if env.protocol is not None:
            return self._protocols.of(env.protocol) or self._protocols.default
        return self._registered_version(env.charge_point_id) or self._protocols.default

    def _registered_version(self, cp: str) -> Protocol | None:
        """The charger's registered version (the default if it has none),
        as last read, if that was within REGISTRATION_TTL_S of this batch."""
        held = self._registered.get(cp)
        if held is None or self._batch_clock - held[1] > REGISTRATION_TTL_S:
            return None
        return held[0]

    async def _read_registration(self, cp: str) -> Protocol:
        """The charger's registered version, read, else the default."""
        if len(self._registered) >= _REGISTRATIONS_MAX:
            self._registered.clear()
        name = await self._state.charger_protocol(cp)
        protocol = self._protocols.by_name.get(name or "") or self._protocols.default
        self._registered[cp] = (protocol, time.monotonic())
        return protocol

    def _decode(self, d: Delivery, ts: str) -> Envelope | Outcome:
        if not d.raw:
            reason = "stream entry holds no envelope (not written by the adapter, or trimmed)"
            return Outcome(d.entry_id, dead_reason=reason)
        try:
            env = envelope.decode(d.raw, self._limits.max_envelope_bytes)
        except Rejected as r:
            if r.is_reply:
                return Outcome(d.entry_id, dead_reason=r.error.description, raw=d.raw)
            code = self._spelling(r).error_code(r.error)
            reply = envelope.encode_error(r.charge_point_id, r.message_id, r.error, ts, code)
            return Outcome(d.entry_id, reply_key=keys.responses(r.charge_point_id), reply=reply,
                           error_code=code)  # fmt: skip
        except Undeliverable as u:
            return Outcome(d.entry_id, dead_reason=u.reason, raw=d.raw)
        if d.deliveries > self._limits.max_deliveries:
            return self._poison(d, env, ts)
        return env

    def _poison(self, d: Delivery, env: Envelope, ts: str) -> Outcome:
        reason = (
            f"delivered {d.deliveries} times, more than the limit of {self._limits.max_deliveries}"
        )
        out = Outcome(d.entry_id, dead_reason=reason, raw=d.raw, envelope=env)
        if isinstance(env.payload, Call):
            # The charger is waiting for an answer: tell it, don't leave it to time out.
            error = InternalFailure(f"{env.payload.action} could not be processed")
            code = self._spelling(env).error_code(error)
            out.reply_key = keys.responses(env.charge_point_id)
            out.reply = envelope.encode_error(env.charge_point_id, env.message_id, error, ts, code)
            out.error_code = code
        return out

    async def _handle(self, d: Delivery, env: Envelope, now: datetime, ts: str) -> Outcome:
        frame = env.payload
        cp = env.charge_point_id
        out = Outcome(d.entry_id, envelope=env)
        if not isinstance(frame, Call):
            # A charger's answer to one of our commands: complete it.
            out.command = await self._state.command(frame.unique_id)
            if out.command is None:
                out.effects.anomaly(cp, "reply to an unknown command", clock.stored(now),
                                   command_id=frame.unique_id)  # fmt: skip
            else:
                out.command_state = reply_effects(
                    out.effects, out.command, frame, clock.epoch_ms(now)
                )
            return out
        out.reply_key = keys.responses(cp)
        # The version it names (None: one we do not speak), else its
        # charger's registered one: known, or read once now.
        if env.protocol is not None:
            protocol = self._protocols.of(env.protocol)
        else:
            protocol = self._registered_version(cp) or await self._read_registration(cp)
        # An envelope naming a version we do not speak is told so in the default's words.
        speaks = protocol or self._protocols.default
        try:
            if protocol is None:
                raise ProtocolViolation(
                    f"envelope protocol {env.protocol!r} is none this central system speaks"
                    f" ({', '.join(sorted(self._protocols.by_name))})"
                )
            route = protocol.routes.get(frame.action)
            if route is None:
                if frame.action in protocol.actions:
                    raise NotSupportedAction(
                        f"{frame.action} is not supported from a charge point ({protocol.name})"
                    )
                raise NotImplementedAction(
                    f"Action {frame.action} is not implemented ({protocol.name})"
                )
            request = self._decoded.pop(id(frame), None)
            try:
                if request is None:
                    request = route.decoder.decode(frame.payload)
            # Not only ValidationError: the envelope's decode skipped the
            # payload, which may still hold a lone surrogate escape.
            except msgspec.DecodeError as exc:
                raise from_validation(frame.action, str(exc)) from None
            received = clock.parse(env.timestamp) or now
            ctx = Context(
                cp, frame.unique_id, now, received, self._config, self._state, out.effects
            )
            response = await route.handler(ctx, request)
        except OcppError as error:
            out.effects = Effects()  # a refused CALL changes nothing
            code = speaks.error_code(error)
            out.reply = envelope.encode_error(cp, frame.unique_id, error, ts, code)
            out.error_code = code
            return out
        out.reply = envelope.encode_result(cp, frame.unique_id, _encoder.encode(response), ts)
        return out
