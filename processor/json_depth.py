"""How deeply a JSON text nests, found without a recursive parser, and a
shallow copy of it to read what sits near its top.

msgspec, like every recursive-descent decoder, recurses once per level of
nesting and raises RecursionError near Python's recursion limit, which is
reached sooner the deeper the caller's own stack is. ``[[[[...]]]]`` of a
few kilobytes in one frame would make every decode of it raise, on every
replica that claims it. So no text from outside reaches a decoder until it is
known to nest at most :data:`MAX_DEPTH` levels, and the fallbacks that read
bad input for whom to tell read :func:`shallow` copies.

Both are linear in the text's length whatever it holds.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Final

# Far beyond any OCPP message (a 1.6 envelope nests 8 levels at most) and far
# below the recursion limit, wherever a decoder is called from.
MAX_DEPTH: Final = 64

_QUOTES_AND_BRACKETS: Final = b'"[]{}'
_NOT_QUOTES_OR_BRACKETS: Final = bytes(b for b in range(256) if b not in _QUOTES_AND_BRACKETS)
# Openers step one level down, closers one up, as signed bytes.
_STEPS: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
# A string (or what is left of one at the end of the text, perhaps with a
# dangling backslash: every quote then starts a match that cannot fail), or
# a run of other bytes, then one bracket or the end. Each match ends at a
# bracket outside strings, so a scan never restarts inside a string.
_TO_BRACKET: Final = re.compile(
    rb'(?:"(?:[^"\\]++|\\[\s\S])*+(?:"|\\?\Z)|[^"\[\]{}]++)*+([\[\]{}]|\Z)'
)
_OPENERS: Final = frozenset(b"[{")


def depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (0 for a scalar),
    brackets inside strings aside.

    Done in C, a pass at a time: escaped backslashes, then escaped quotes
    go (pairing from the left, as JSON's escapes do), then all but quotes
    and brackets; the pieces between quotes are then alternately outside
    and inside strings. About 1 µs a kilobyte. For text that is not JSON the answer may be off past
    the first fault, but never below what a decoder reaches before it stops
    there: up to that fault both read the strings alike.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Two quotes side by side end one string and start the next (what stood
    # between, a comma or a colon, is gone) or hold nothing: without them
    # the rest alternates as before, and most texts have no quote left.
    marks = raw.translate(None, _NOT_QUOTES_OR_BRACKETS).replace(b'""', b"")
    if b'"' in marks:
        marks = b"".join(marks.split(b'"')[::2])
    return max(accumulate(array("b", marks.translate(_STEPS)), initial=0))


def within(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether ``raw`` nests at most ``limit`` levels."""
    # Most messages hold fewer brackets than that in all: two counts decide.
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return True
    return depth(raw) <= limit


def shallow(raw: bytes, limit: int) -> bytes:
    """``raw`` with each array or object that opens below ``limit`` levels
    replaced by ``null``: what sits above stays as it was, for a decoder to
    read safely. Text that is not JSON stays broken (a container left open
    at the end is cut to ``null``)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return raw
    kept: list[bytes] = []
    level = 0
    resume = 0  # where the text after the last cut container starts
    for match in _TO_BRACKET.finditer(raw):
        at = match.start(1)
        if at == len(raw):
            break
        if raw[at] in _OPENERS:
            level += 1
            if level == limit + 1:
                kept.append(raw[resume:at])
                kept.append(b"null")
                resume = -1
        else:
            if level == limit + 1:
                resume = at + 1
            level -= 1
    if resume >= 0:
        kept.append(raw[resume:])
    return b"".join(kept)
