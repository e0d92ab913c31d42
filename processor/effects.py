"""The writes a message's handling asks for, collected rather than performed.

Handlers append to an :class:`Effects`; the consumer commits them in one
atomic script together with the reply and the ``XACK`` (see
``processor/lua/commit.lua``), and only if the entry was still pending, so a
redelivered message never applies them twice. Every op must be a plain write
that is safe to apply once: the commit has no rollback.
"""

from __future__ import annotations

from collections.abc import Mapping

Arg = str | bytes | int | float
# An op as the commit script reads it: its name, then its arguments.
Op = list[str]


class Effects:
    """An ordered list of Redis writes.

    ``call`` runs a Redis command; ``hset_if`` writes a hash only if a guard
    holds and records the fields on a fallback stream otherwise. Arguments
    are kept as str, which is how the commit ships them: numbers as Redis
    would format them (so they cross Lua unrounded), bytes as UTF-8 text
    (a ``UnicodeDecodeError`` here fails the handler, as it should).
    """

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def call(self, command: str, *args: Arg) -> None:
        """Run ``command *args`` at commit."""
        self.ops.append(["call", command, *map(_arg, args)])

    def hset(self, key: str, fields: Mapping[str, Arg]) -> None:
        self.call("HSET", key, *_flatten(fields))

    def hset_if(
        self,
        key: str,
        fields: Mapping[str, Arg],
        *,
        fallback: str,
        note: str,
        field: str = "",
        equals: str = "",
    ) -> None:
        """HSET ``fields`` on ``key`` if ``key`` exists (``field`` empty) or if
        its ``field`` equals ``equals``; otherwise XADD them with ``key`` and
        ``note`` to the capped stream ``fallback`` for an operator to look at."""
        self.ops.append(["hset_if", key, field, equals, fallback, note, *_flatten(fields)])


def _arg(value: Arg) -> str:
    if isinstance(value, str):
        return value
    return value.decode() if isinstance(value, bytes) else str(value)


def _flatten(fields: Mapping[str, Arg]) -> list[str]:
    out: list[str] = []
    for name, value in fields.items():
        out.append(name)
        out.append(_arg(value))
    return out
