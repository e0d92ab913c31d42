"""The writes a message's handling asks for, collected rather than performed.

Handlers append to an :class:`Effects`; the consumer commits them in one
atomic script together with the reply and the ``XACK`` (see
``processor/lua/commit.lua``), and only if the entry was still pending, so a
redelivered message never applies them twice. Every op must be a plain write
that is safe to apply once: the commit has no rollback.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

Arg = str | bytes | int | float


class Effects:
    """An ordered list of Redis writes, flattened for the commit script.

    Each op is recorded as ``[argc, name, *args]``; ``call`` runs a Redis
    command, ``hset_if`` writes a hash only if a guard holds and records the
    fields on a fallback stream otherwise.
    """

    __slots__ = ("_args", "count")

    def __init__(self) -> None:
        self._args: list[Arg] = []
        self.count = 0

    def call(self, command: str, *args: Arg) -> None:
        """Run ``command *args`` at commit."""
        self._op("call", command, *args)

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
        self._op("hset_if", key, field, equals, fallback, note, *_flatten(fields))

    def _op(self, name: str, *args: Arg) -> None:
        self._args.append(len(args) + 1)
        self._args.append(name)
        self._args.extend(args)
        self.count += 1

    def args(self) -> list[Arg]:
        return self._args


def _flatten(fields: Mapping[str, Arg]) -> Iterator[Arg]:
    for name, value in fields.items():
        yield name
        yield value
