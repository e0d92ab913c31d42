"""Sending commands to chargers: one CALL in flight per charger, the rest
queued in Redis in order, each with a deadline.

Any process may send (the API, the CLI, a processor): ``send`` records the
command and queues it in one script that also sends it if the charger's
slot is free. The reply, on whichever processor replica it lands, completes
it and sends the next (``processor/commands.py``); ``expire_due``, run by
every processor, times out what passed its deadline and frees the slot.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime

import anyio
from opentelemetry import metrics, trace
from redis.asyncio import Redis

from processor import clock, envelope, frames, keys, trace_context
from processor.commands import CommandRecord, validate_request
from processor.lifecycle import Stopper
from processor.protocol_names import OCPP16
from processor.redis_io import TRANSIENT, Backoff, script
from processor.spans import COMMAND_SCOPE, command_counter
from processor.state import decoded

log = logging.getLogger(__name__)
_SWEEP_BATCH = 100


def _pairs(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


class CommandQueue:
    """Commands in Redis: send, look up, wait for, time out."""

    def __init__(
        self,
        redis: Redis,
        *,
        reply_ttl_s: int = 300,
        retention_s: int = 7 * 86400,
        tracer_provider: trace.TracerProvider | None = None,
        default_protocol: str = OCPP16,
    ):
        self._redis = redis
        # The version of a charger that has not registered one.
        self.default_protocol = default_protocol
        # Each entry point passes its own; the global one serves embedders.
        provider = tracer_provider or trace.get_tracer_provider()
        self._tracer = provider.get_tracer(COMMAND_SCOPE)
        self._tracing = trace_context.tracing(self._tracer)
        self._reply_ttl_ms = reply_ttl_s * 1000
        self._retention_s = retention_s
        self._script = script(redis, "processor", "commands", "pump")

    async def send(
        self,
        charge_point_id: str,
        action: str,
        body: bytes,
        *,
        timeout_s: float = 30.0,
        traceparent: str = "",
        protocol: str = OCPP16,
    ) -> CommandRecord:
        """Validate ``action`` as a command of OCPP version ``protocol`` (the
        charger's) and queue it; raises CommandRejected if invalid. Returns
        it as recorded: ``sent`` if the charger's slot was free, else
        ``queued``.

        Traced as a ``send`` span, child of the current span (an API
        request's), else of ``traceparent`` (W3C, e.g. the caller's header);
        the record keeps the send span's own traceparent, so the span that
        handles the charger's reply, on any replica, links to it. Untraced,
        the record keeps ``traceparent`` as given, and no span is made."""
        if not self._tracing:
            return await self._send(charge_point_id, action, body, timeout_s, traceparent, protocol)
        parent = trace.get_current_span().get_span_context()
        context = (
            None
            if parent.is_valid
            else trace_context.parent_context(
                trace_context.span_context(traceparent) if traceparent else None
            )
        )
        with self._tracer.start_as_current_span(
            f"send {action}", context, trace.SpanKind.PRODUCER,
            {"messaging.system": "redis", "messaging.operation.type": "send",
             "messaging.operation.name": "send", "ocpp.action": action,
             "ocpp.charge_point_id": charge_point_id, "ocpp.message_type": envelope.CALL},
        ) as span:  # fmt: skip
            sent = span.get_span_context()
            if sent.is_valid:
                traceparent = trace_context.traceparent(sent)
            record = await self._send(
                charge_point_id, action, body, timeout_s, traceparent, protocol
            )
            span.set_attributes(
                {"messaging.message.id": record.command_id, "ocpp.message_id": record.command_id,
                 "messaging.destination.name": keys.responses(charge_point_id),
                 "ocpp.command.state": record.state}
            )  # fmt: skip
            return record

    async def _send(
        self,
        charge_point_id: str,
        action: str,
        body: bytes,
        timeout_s: float,
        traceparent: str,
        protocol: str,
    ) -> CommandRecord:
        request = validate_request(action, body, protocol)
        command_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        now_ms = clock.epoch_ms(now)
        frame = envelope.encode_call(charge_point_id, command_id, action, request, clock.wire(now))
        fields = {
            "charge_point_id": charge_point_id,
            "action": action,
            "request": request.decode(),
            "frame": frame.decode(),
            # The OCPP-J frame alone, for the charger's last frames.
            "call": frames.sent_frame(frame),
            "created_at_ms": str(now_ms),
            "timeout_ms": str(int(timeout_s * 1000)),
            "traceparent": traceparent,
            "protocol": protocol,
        }
        deadline_ms = now_ms + int(timeout_s * 1000)
        flat = await self._script(
            keys=[
                keys.COMMAND_DEADLINES,
                keys.command(command_id),
                keys.command_queue(charge_point_id),
            ],
            args=[
                "enqueue", now_ms, self._reply_ttl_ms, self._retention_s, deadline_ms,
                charge_point_id, command_id, *[x for kv in fields.items() for x in kv],
            ],
        )  # fmt: skip
        record = CommandRecord.from_hash(command_id, _pairs(flat))
        assert record is not None  # the script just wrote it
        return record

    async def get(self, command_id: str) -> CommandRecord | None:
        fields = await self._redis.hgetall(keys.command(command_id))
        return CommandRecord.from_hash(command_id, decoded(fields))

    async def wait(self, command_id: str, timeout_s: float) -> CommandRecord | None:
        """The command once it has an outcome, or as it is after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            record = await self.get(command_id)
            left = deadline - time.monotonic()
            if record is None or record.state in ("answered", "failed", "timed_out") or left <= 0:
                return record
            # Woken by the script that completes or times it out; in slices
            # shorter than the client's socket timeout (5 s by default).
            await self._redis.blpop(
                [keys.command_done(command_id)], timeout=min(max(left, 0.01), 4)
            )

    async def expire_due(self, limit: int = _SWEEP_BATCH) -> tuple[int, list[str]]:
        """Time out commands past their deadline: returns how many deadlines
        were looked at (``limit`` if more may be due) and the actions of the
        commands timed out."""
        now_ms = clock.epoch_ms(datetime.now(UTC))
        looked, *actions = await self._script(
            keys=[keys.COMMAND_DEADLINES],
            args=["expire", now_ms, self._reply_ttl_ms, self._retention_s, limit],
        )
        return int(looked), [a.decode() for a in actions]


class Sweeper:
    """Times out commands past their deadline, every ``interval_s``, until
    stopped. Every processor runs one; the script makes that safe."""

    def __init__(
        self,
        queue: CommandQueue,
        interval_s: float,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._queue = queue
        self._interval = interval_s
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(COMMAND_SCOPE)
        self._timed_out = command_counter(meter)
        self._stopper = Stopper()
        self._backoff = Backoff(log)

    def stop(self) -> None:
        self._stopper.stop()

    async def run(self) -> None:
        while not self._stopper.stopping:
            try:
                looked, actions = await self._queue.expire_due()
                for action in actions:
                    self._timed_out.add(1, {"ocpp.action": action,
                                            "ocpp.command.outcome": "timed_out"})  # fmt: skip
                if looked == _SWEEP_BATCH:  # more may be due: go again at once
                    continue
                self._backoff.ok()
            except TRANSIENT as exc:
                await self._backoff.wait(exc)
                continue
            with self._stopper.interruptible():
                await anyio.sleep(self._interval)
