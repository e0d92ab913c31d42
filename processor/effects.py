"""The writes a message's handling asks for, collected rather than performed.

Handlers append to an :class:`Effects`; the consumer commits them in one
atomic script together with the reply and the ``XACK`` (see
``processor/lua/commit.lua``), and only if the entry was still pending, so a
redelivered message never applies them twice. Every op must be a plain write
that is safe to apply once: the commit has no rollback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processor import history, keys

Arg = str | bytes | int | float
_ANOMALIES_MAXLEN = 100_000
# An op as the commit script reads it: its name, then its arguments (str,
# or for complete_command nested lists).
Op = list[Any]


class Effects:
    """An ordered list of Redis writes.

    ``call`` runs a Redis command; ``hset_if`` writes a hash only if a guard
    holds and records the fields on a fallback stream otherwise. Arguments
    are kept as str, which is how the commit ships them: numbers as Redis
    would format them (so they cross Lua unrounded), bytes as UTF-8 text
    (a ``UnicodeDecodeError`` here fails the handler, as it should).
    """

    __slots__ = ("ops", "records")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        # History for PostgreSQL, appended to ocpp:history at commit.
        self.records: list[history.Record] = []

    def record(self, record: history.Record) -> None:
        """Append ``record`` to the history stream at commit."""
        self.records.append(record)

    def call(self, command: str, *args: Arg) -> None:
        """Run ``command *args`` at commit."""
        self.ops.append(["call", command, *map(_arg, args)])

    def sadd(self, key: str, member: str) -> None:
        """SADD ``member`` to ``key`` at commit: ``call`` without the
        conversions, for the SADDs made with most messages."""
        self.ops.append(["call", "SADD", key, member])

    def hset(self, key: str, fields: Mapping[str, Arg]) -> None:
        self.call("HSET", key, *_flatten(fields))

    def hset_if(
        self,
        key: str,
        fields: Mapping[str, Arg],
        *,
        fallback: str,
        kind: str,
        field: str = "",
        equals: str = "",
    ) -> None:
        """HSET ``fields`` on ``key`` if ``key`` exists (``field`` empty) or if
        its ``field`` equals ``equals``; otherwise XADD them with ``kind`` and
        ``key`` to the capped stream ``fallback`` for an operator to look at."""
        self.ops.append(["hset_if", key, field, equals, fallback, kind, *_flatten(fields)])

    def hset_newer(
        self, key: str, fields: Mapping[str, Arg], *, timestamp_field: str, timestamp: str
    ) -> None:
        """HSET ``fields`` and ``timestamp_field`` = ``timestamp`` on ``key``
        unless it already holds a timestamp that is not older; ``timestamp``
        must be :func:`processor.clock.stored` text."""
        self.ops.append(["hset_newer", key, timestamp_field, timestamp, *_flatten(fields)])

    def latest(
        self,
        key: str,
        values: Mapping[str, str],
        *,
        oldest: str,
        newest: str,
    ) -> None:
        """Per field of ``values``, newest wins: HSET it unless ``key`` holds
        a value for it that is not older. Each value opens with its
        timestamp, :func:`processor.clock.stored` text (fixed width), a
        space, then what to keep: ``"<timestamp> <unit> <value>"``.

        ``oldest`` and ``newest`` are the least and greatest of those
        timestamps, which the caller knows (so the script need not cut them
        out). They may be wider (only the script's fast path is then
        skipped more often), never narrower: a ``newest`` too low would let
        a later, older reading overwrite newer values."""
        if not values:
            return
        op = ["latest", key, oldest, newest]
        for pair in values.items():  # a MeterValues each: the quickest flattening
            op += pair
        self.ops.append(op)

    def newest_fields(self, key: str, times: str, at: str, fields: Mapping[str, str]) -> None:
        """Per field of ``fields``, newest wins: HSET it on ``key``, and
        ``at`` under the same field on ``times``, unless ``times`` holds a
        later time for it. ``at`` is :func:`processor.clock.stored` text;
        an equal time is written again (a redelivery writes what it wrote)."""
        if fields:
            self.ops.append(["newest_fields", key, times, at, *_flatten(fields)])

    def hset_once(
        self, key: str, fields: Mapping[str, Arg], *, marker: str, fallback: str, kind: str
    ) -> None:
        """HSET ``fields`` and ``marker`` on ``key`` unless ``marker`` is set;
        if it is, identical ``fields`` change nothing and different ones are
        XADDed with ``kind`` and ``key`` to the capped stream ``fallback``."""
        self.ops.append(["hset_once", key, marker, fallback, kind, *_flatten(fields)])

    def complete_command(
        self,
        command_id: str,
        charge_point_id: str,
        now_ms: int,
        fields: Mapping[str, Arg],
        applied: Effects,
    ) -> None:
        """Complete the command with ``fields`` and apply ``applied`` if it
        was in flight to this charger, free its slot and send the next one;
        a reply to a command that timed out or was answered already is
        recorded on it (``late_*`` fields) and not applied."""
        self.ops.append(["complete_command", command_id, charge_point_id, str(now_ms),
                         _flatten(fields), applied.ops])  # fmt: skip

    def unset_if(self, key: str, value: Arg, *, field: str = "") -> None:
        """Delete ``key`` (or its hash ``field``) if it still holds ``value``."""
        self.ops.append(["unset_if", key, field, _arg(value)])

    def anomaly(self, charge_point_id: str, kind: str, at: str, **fields: Arg) -> None:
        """Record something odd a charger did at ``at`` (stored time), for an
        operator to look at: live on a capped stream, and in history."""
        flat = _flatten(fields)
        self.call("XADD", keys.ANOMALIES, "MAXLEN", "~", _ANOMALIES_MAXLEN, "*",
                  "charge_point_id", charge_point_id, "kind", kind, *flat)  # fmt: skip
        self.records.append(
            history.Anomaly(
                charge_point_id, kind, at, dict(zip(flat[::2], flat[1::2], strict=True))
            )
        )


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
