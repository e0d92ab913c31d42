"""The bare baseline: a hand-batched stream consumer with no guarantees and
no state, reading the stream our adapter fills.

XREADGROUP a batch from ``ocpp:inbound`` (the processors' group, so the
adapter trims the stream as it does for ours), decode each envelope with
msgspec (the envelope and the OCPP-J frame; the action's payload is left
raw: no validation beyond decoding), build a correct CALLRESULT for each
action in the envelope's OCPP version (``protocol``: 1.6 unless it says
2.0.1), then LPUSH the replies and XACK the whole batch in one pipeline.
Nothing is atomic, nothing is remembered: a StartTransaction's
transactionId is a hash of the charger and the payload, so a retry of the
same start gets the same id without any state. An action it does not know
gets a NotImplemented CALLERROR, so it still answers everything once.

This is the bar for the processor's cost: what answering costs when every
guarantee and all state are left out, on the same front half (adapter,
stream) as ours.

Run as ``python -m bench.baseline_bare`` with ``REDIS_URL`` in the
environment; SIGTERM or SIGINT stops it within a second.
"""

from __future__ import annotations

import os
import zlib
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import redis

from bench.baseline_process import Stopping, serve
from processor import clock, keys
from processor.protocol_names import OCPP201

BATCH: Final = 256  # as the processor's default batch_size
BLOCK_MS: Final = 1000
HEARTBEAT_INTERVAL: Final = 300


class Inbound(msgspec.Struct):
    charge_point_id: str
    message_id: str
    payload: tuple[int, str, str, msgspec.Raw]
    protocol: str | None = None  # our gateway's extension: the OCPP version


class Outbound(msgspec.Struct):
    charge_point_id: str
    message_type: int
    message_id: str
    payload: tuple[Any, ...]
    timestamp: str


_decoder: Final = msgspec.json.Decoder(Inbound)
_encoder: Final = msgspec.json.Encoder()
_ACCEPTED: Final = {"idTagInfo": {"status": "Accepted"}}
_ACCEPTED_V201: Final = {"idTokenInfo": {"status": "Accepted"}}
_EMPTY: Final[dict[str, Any]] = {}


def body_for(
    cp: str, action: str, payload: msgspec.Raw, now: str, protocol: str | None = None
) -> dict[str, Any] | None:
    """The CALLRESULT payload answering ``action`` in ``protocol`` (1.6 if
    None), or None if it is not one this consumer knows."""
    if protocol == OCPP201:
        return _body_v201(action, payload, now)
    match action:
        case "Heartbeat":
            return {"currentTime": now}
        case "BootNotification":
            return {"status": "Accepted", "currentTime": now, "interval": HEARTBEAT_INTERVAL}
        case "Authorize":
            return _ACCEPTED
        case "StartTransaction":
            tid = zlib.crc32(bytes(payload), zlib.crc32(cp.encode())) & 0x3FFFFFFF
            return {"idTagInfo": {"status": "Accepted"}, "transactionId": tid + 1}
        case "StatusNotification" | "MeterValues" | "StopTransaction":
            return _EMPTY
    return None


def _body_v201(action: str, payload: msgspec.Raw, now: str) -> dict[str, Any] | None:
    """OCPP 2.0.1's: a TransactionEvent naming an idToken must be told its
    idTokenInfo, found by a look at the raw payload rather than decoding it."""
    match action:
        case "Heartbeat" | "BootNotification":
            return body_for("", action, payload, now)  # the same shape as 1.6's
        case "Authorize":
            return _ACCEPTED_V201
        case "TransactionEvent":
            return _ACCEPTED_V201 if b'"idToken"' in bytes(payload) else _EMPTY
        case "StatusNotification" | "MeterValues":
            return _EMPTY
    return None


def reply_for(raw: bytes, now: str) -> tuple[str, bytes] | None:
    """(reply list, reply envelope) for one inbound envelope; None for
    anything but a CALL (undecodable input included)."""
    try:
        env = _decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    kind, mid, action, payload = env.payload
    if kind != 2:
        return None
    body = body_for(env.charge_point_id, action, payload, now, env.protocol)
    frame: tuple[Any, ...] = (3, mid, body)
    if body is None:
        frame = (4, mid, "NotImplemented", f"{action} is not implemented", _EMPTY)
    reply = Outbound(env.charge_point_id, frame[0], mid, frame, now)
    return keys.responses(env.charge_point_id), _encoder.encode(reply)


def run(client: redis.Redis, stopping: Stopping) -> int:
    """Answer batches until SIGTERM or SIGINT; returns how many entries were read."""
    consumer = f"bare-{os.getpid()}"
    try:
        client.xgroup_create(keys.INBOUND, keys.GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
    handled = 0
    while not stopping.requested:
        got: Any = client.xreadgroup(
            keys.GROUP, consumer, {keys.INBOUND: ">"}, count=BATCH, block=BLOCK_MS
        )
        if not got:
            continue
        entries = got[0][1]
        now = clock.wire(datetime.now(UTC).replace(microsecond=0))
        pipe = client.pipeline(transaction=False)
        for _, fields in entries:
            out = reply_for(fields[keys.ENVELOPE_FIELD.encode()], now)
            if out is not None:
                pipe.lpush(*out)
        pipe.xack(keys.INBOUND, keys.GROUP, *(entry_id for entry_id, _ in entries))
        pipe.execute()
        handled += len(entries)
    return handled


def main() -> None:
    serve("baseline-bare", run)


if __name__ == "__main__":
    main()
