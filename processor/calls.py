"""CALLs the central system sends to chargers, and the pending store that
lets any replica match the charger's reply to them.

A CALL is recorded as the hash ``ocpp:call:{charge point}:{message id}``
with ``state`` ``pending`` and an expiry, then pushed to the charger; the
reply, on whichever replica it lands, flips ``state`` to ``answered`` or
``failed`` in the same atomic commit that acks it (``processor/dispatch.py``).
A reply to an unknown or expired CALL is kept in ``ocpp:anomalies``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
from redis.asyncio import Redis

from processor import clock, envelope, keys

_encoder = msgspec.json.Encoder()


async def send_call(
    redis: Redis,
    charge_point_id: str,
    action: str,
    payload: msgspec.Struct | dict[str, object],
    *,
    ttl_s: int = 60,
    reply_ttl_s: int = 300,
) -> str:
    """Record a pending CALL and push it to the charger; returns its message id."""
    message_id = str(uuid.uuid4())
    body = _encoder.encode(payload)
    ts = clock.wire(datetime.now(UTC))
    frame = envelope.encode_call(charge_point_id, message_id, action, body, ts)
    call_key = keys.call(charge_point_id, message_id)
    reply_key = keys.responses(charge_point_id)
    async with redis.pipeline(transaction=True) as tx:
        tx.hset(
            call_key, mapping={"state": "pending", "action": action, "request": body, "sent_at": ts}
        )
        tx.expire(call_key, ttl_s)
        tx.lpush(reply_key, frame)
        tx.expire(reply_key, reply_ttl_s)
        await tx.execute()
    return message_id
