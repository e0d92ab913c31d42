"""How deeply a JSON text nests, found without a recursive parser, and a
shallow copy of it to read what sits near its top.

msgspec, like every recursive-descent decoder, recurses once per level of
nesting and raises RecursionError near Python's recursion limit, which is
reached sooner the deeper the caller's own stack is. ``[[[[...]]]]`` of a
few kilobytes in one frame would make every decode of it raise, on every
replica that claims it. So no text from outside reaches a decoder until it is
known to nest at most :data:`MAX_DEPTH` levels, and the fallbacks that read
bad input for whom to tell read :func:`shallow` copies.

Both scans are linear in the text's length whatever it holds: every quote
starts a string match that cannot fail (an unterminated string runs to the
end), so no scan restarts inside a string.
"""

from __future__ import annotations

import re
from array import array
from itertools import accumulate
from typing import Final

# Far beyond any OCPP message (a 1.6 envelope nests 8 levels at most) and far
# below the recursion limit, wherever a decoder is called from.
MAX_DEPTH: Final = 64

_STRING: Final = rb'"(?:[^"\\]++|\\[\s\S])*+(?:"|\\?\Z)'
_STRINGS: Final = re.compile(_STRING)
_TOKENS: Final = re.compile(_STRING + rb"|[\[\]{}]")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
# Openers step one level down, closers one up, as signed bytes.
_STEPS: Final = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_QUOTE: Final = ord('"')
_OPENERS: Final = frozenset(b"[{")


def depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in ``raw`` (0 for a scalar),
    brackets inside strings aside."""
    steps = _STRINGS.sub(b"", raw).translate(_STEPS, _NOT_BRACKETS)
    return max(accumulate(array("b", steps), initial=0))


def within(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether ``raw`` nests at most ``limit`` levels."""
    # What chargers send holds fewer brackets than that in all; only larger
    # texts (a long offline MeterValues, a full GetConfiguration) are scanned.
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return True
    return depth(raw) <= limit


def shallow(raw: bytes, limit: int) -> bytes:
    """``raw`` with each array or object that opens below ``limit`` levels
    replaced by ``null``: what sits above stays as it was, for a decoder to
    read safely. Text that is not JSON stays broken (a container left open
    at the end is cut to ``null``)."""
    if within(raw, limit):
        return raw
    kept: list[bytes] = []
    level = 0
    resume = 0  # where the text after the last cut container starts
    for match in _TOKENS.finditer(raw):
        char = raw[match.start()]
        if char == _QUOTE:
            continue
        if char in _OPENERS:
            level += 1
            if level == limit + 1:
                kept.append(raw[resume : match.start()])
                kept.append(b"null")
                resume = -1
        else:
            if level == limit + 1:
                resume = match.end()
            level -= 1
    if resume >= 0:
        kept.append(raw[resume:])
    return b"".join(kept)
