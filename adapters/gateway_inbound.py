"""Charge point -> back end: each text frame becomes an envelope on
``ocpp:requests``, as the ws-server writes it (CONTRACT.md).

:func:`envelope` is pure; :class:`Forwarder` is the one task that pushes.
Connection handlers hand it envelopes through a bounded in-memory stream and
it LPUSHes them in batches (one round trip for many frames, one Redis
connection for every charger). ``LPUSH key e1 e2`` leaves ``e1`` nearest the
right end, so a consumer popping from the right still sees arrival order. A
full stream makes handlers wait, which stops them reading their sockets: TCP
backpressure rather than unbounded memory while Redis is slow or down.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Final, TypeVar

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from processor import json_depth, keys
from processor.clock import wire
from processor.envelope import CALL
from processor.redis_io import TRANSIENT, Backoff

log = logging.getLogger(__name__)

T = TypeVar("T")
D = TypeVar("D")


class _Inbound(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The envelope with the contract's field order; ``action`` omitted unless set."""

    charge_point_id: str
    message_type: int
    message_id: str
    action: str | None = None
    payload: msgspec.Raw
    timestamp: str
    # Our extension: the OCPP version the charger chose at its handshake.
    protocol: str | None = None


_head: Final = msgspec.json.Decoder(list[msgspec.Raw])
_any: Final = msgspec.json.Decoder()
_int: Final = msgspec.json.Decoder(int)
_str: Final = msgspec.json.Decoder(str)
_encoder: Final = msgspec.json.Encoder()


def received_now() -> str:
    """RFC 3339 UTC with milliseconds: the envelope's ``timestamp``."""
    return wire(datetime.now(UTC))


def envelope(
    charge_point_id: str, frame: bytes, received: str, protocol: str | None = None
) -> bytes:
    """The envelope of one text frame, whatever the frame holds, from a
    charger speaking ``protocol`` (the subprotocol it chose; None: unsaid).

    ``payload`` is the frame verbatim when it is JSON (any JSON value: the
    processor answers or dead-letters what is not an OCPP-J array) and the
    frame as a JSON string when it is not JSON at all, so the dead letter
    still shows what the charger sent. ``message_type`` is the frame's first
    element if that is an integer, else 0; ``message_id`` its second if a
    string, else ""; ``action`` its third on a CALL, if a string.

    Those are read from a copy cut below the frame's own elements, so a
    frame nested too deeply to decode is forwarded as it is, and the
    processor refuses it with a CALLERROR (only what the cut dropped is
    then unchecked here; the processor reads it as cautiously).
    """
    items: list[msgspec.Raw] = []
    payload = msgspec.Raw(frame)
    head = frame if json_depth.within(frame) else json_depth.shallow(frame, 1)
    try:
        try:
            items = _head.decode(head)
        except msgspec.ValidationError:
            # Not an array; msgspec stopped at the first value, so check the rest.
            _any.decode(head)
    except msgspec.DecodeError:
        payload = msgspec.Raw(_encoder.encode(frame.decode(errors="replace")))
    message_type = _element(items, 0, _int, 0)
    action = _element(items, 2, _str, None) if message_type == CALL else None
    return _encoder.encode(
        _Inbound(
            charge_point_id=charge_point_id,
            message_type=message_type,
            message_id=_element(items, 1, _str, ""),
            action=action,
            payload=payload,
            timestamp=received,
            protocol=protocol,
        )
    )


def _element(
    items: list[msgspec.Raw], index: int, decoder: msgspec.json.Decoder[T], default: D
) -> T | D:
    if index >= len(items):
        return default
    try:
        return decoder.decode(items[index])
    except msgspec.DecodeError:  # of another type, or a string that is not UTF-8
        return default


class Forwarder:
    """LPUSHes envelopes onto ``ocpp:requests`` in batches of up to ``batch``.

    :meth:`send` waits while ``buffer`` envelopes are already waiting.
    :meth:`close` makes :meth:`run` push what is left and return. A batch
    that fails on a connection fault is pushed again after a backoff: frames
    are forwarded at least once (charge points retry anyway, and the
    processor is idempotent for the messages where it matters).
    """

    def __init__(self, redis: Redis, *, buffer: int = 4096, batch: int = 512) -> None:
        self._redis = redis
        self._batch = batch
        self._send: MemoryObjectSendStream[bytes]
        self._receive: MemoryObjectReceiveStream[bytes]
        self._send, self._receive = anyio.create_memory_object_stream[bytes](buffer)
        self._backoff = Backoff(log)
        self.forwarded = 0

    async def send(self, envelope: bytes) -> None:
        await self._send.send(envelope)

    def close(self) -> None:
        self._send.close()

    async def run(self) -> None:
        batch: list[bytes] = []
        async with self._receive:
            while True:
                if not batch:
                    try:
                        batch.append(await self._receive.receive())
                    except anyio.EndOfStream:
                        return
                    while len(batch) < self._batch:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                try:
                    await self._redis.lpush(keys.REQUESTS, *batch)
                except TRANSIENT as exc:
                    await self._backoff.wait(exc)
                    continue
                except ResponseError as exc:  # say, the key is not a list
                    log.error("LPUSH %s refused, retrying: %s", keys.REQUESTS, exc)
                    await anyio.sleep(1.0)
                    continue
                self._backoff.ok()
                self.forwarded += len(batch)
                batch = []
