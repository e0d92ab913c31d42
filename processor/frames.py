"""A charger's last OCPP frames, both ways, for an operator to read
(``GET /v1/charge-points/{id}/frames``, the console's charger page): a
capped list per charger (``ocpp:frames:{id}``, newest first, at most
:data:`processor.keys.FRAMES_KEPT`), each entry a JSON object ``{"at":
<epoch ms>, "dir": "in" | "out", "frame": "<OCPP-J text>"}``.

Every frame of a fleet would cost Redis a write and a copy of the frame per
message, for pages nobody reads: the frames of a charger are recorded while
someone watches it (reading its frames marks it watched for
:data:`WATCH_S`), those of our commands and their answers always (they are
few, and what an operator asks about).

Pure: what a batch's outcomes add to their effects. The dispatcher reads who
is watched, at most every :data:`REFRESH_S`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Final

import msgspec

from processor import clock, keys
from processor.envelope import Call

if TYPE_CHECKING:
    from processor.dispatch import Outcome

# How long reading a charger's frames keeps them being recorded.
WATCH_S: Final = 600
# How stale the processors' view of who is watched may be.
REFRESH_S: Final = 2.0
# A frame longer than this is kept cut, saying how long it was.
MAX_FRAME_CHARS: Final = 16_384
# A charger's frames go this long after its last one recorded: a charger
# gone (or an id that connected once) leaves no key behind for ever.
KEPT_S: Final = 7 * 86_400


class Entry(msgspec.Struct):
    at: int
    dir: str
    frame: str


class _Envelope(msgspec.Struct):
    payload: msgspec.Raw


_encoder = msgspec.json.Encoder()
_envelope = msgspec.json.Decoder(_Envelope)


def _cut(text: str) -> str:
    if len(text) <= MAX_FRAME_CHARS:
        return text
    return f"{text[:MAX_FRAME_CHARS]}... (cut: {len(text)} characters)"


def entry(at_ms: int, direction: str, frame: str) -> str:
    return _encoder.encode(Entry(at_ms, direction, _cut(frame))).decode()


def frame_text(frame: msgspec.Struct) -> str:
    """An OCPP-J frame as text: its payload as it came, byte for byte."""
    # A payload's bytes that are not UTF-8 (refused, but still shown) as U+FFFD.
    return _encoder.encode(frame).decode(errors="replace")


def sent_frame(envelope: bytes) -> str:
    """The OCPP-J frame inside an envelope written for the ws-server."""
    return bytes(_envelope.decode(envelope).payload).decode(errors="replace")


def tap(outcomes: Iterable[Outcome], watched: Collection[str], now_ms: int) -> None:
    """Add to each outcome's effects the recording of its frames: the
    charger's, and our answer, if the charger is watched or the frame
    answers one of our commands. Written with the outcome's effects, so
    once, whatever redeliveries happen."""
    for out in outcomes:
        env = out.envelope
        if env is None:
            continue
        cp = env.charge_point_id
        if isinstance(env.payload, Call) and cp not in watched:
            continue
        received = clock.parse(env.timestamp)
        at = clock.epoch_ms(received) if received is not None else now_ms
        pushed = [entry(at, "in", frame_text(env.payload))]
        if out.reply:
            pushed.append(entry(now_ms, "out", sent_frame(out.reply)))
        key = keys.frames(cp)
        out.effects.call("LPUSH", key, *pushed)
        out.effects.call("LTRIM", key, 0, keys.FRAMES_KEPT - 1)
        out.effects.call("EXPIRE", key, KEPT_S)
