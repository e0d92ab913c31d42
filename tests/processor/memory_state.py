"""An in-memory State for handler tests that need no Redis."""

from __future__ import annotations

from collections.abc import Mapping

from processor.commands import CommandRecord
from processor.types import IdTagRecord, OpenedTransaction


class MemoryState:
    """An in-memory State that behaves like the Redis one."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.calls: list[str] = []
        self.tags: dict[str, IdTagRecord] = {}
        self.active: dict[str, int] = {}
        self.txns: dict[int, dict[str, str]] = {}
        self.known: set[str] = set()
        self.commands: dict[str, CommandRecord] = {}
        self.v201: dict[tuple[str, str], dict[str, str]] = {}
        self.protocols: dict[str, str] = {}
        self.watched: set[str] = set()
        self.seen: dict[str, str] = {}

    async def id_tag(self, tag: str) -> tuple[IdTagRecord | None, int | None]:
        return self.tags.get(tag), self.active.get(tag)

    async def open_transaction(
        self, key: str, cp: str, connector: int, tag: str, meter_start: int, ts: str,
        reservation: int | None,
    ) -> OpenedTransaction:  # fmt: skip
        self.calls.append(key)
        if key not in self.ids:
            tid = self.ids[key] = len(self.ids) + 1
            self.txns[tid] = {"charge_point_id": cp, "connector_id": str(connector),
                              "id_tag": tag, "meter_start": str(meter_start),
                              "start_timestamp": ts}  # fmt: skip
            self.active.setdefault(tag, tid)
        tid = self.ids[key]
        holder = self.active.get(tag)
        return OpenedTransaction(tid, holder if holder != tid else None, self.tags.get(tag))

    async def transaction(self, transaction_id: int) -> dict[str, str] | None:
        return self.txns.get(transaction_id)

    async def transaction_v201(self, charge_point_id: str, transaction_id: str) -> dict[str, str]:
        return dict(self.v201.get((charge_point_id, transaction_id), {}))

    async def charger_protocol(self, charge_point_id: str) -> str | None:
        return self.protocols.get(charge_point_id)

    async def mark_seen(self, seen: Mapping[str, str]) -> None:
        self.seen.update(seen)

    async def watched_chargers(self, now_ms: int) -> set[str]:
        return set(self.watched)

    async def is_known_charger(self, charge_point_id: str) -> bool:
        return charge_point_id in self.known

    async def command(self, command_id: str) -> CommandRecord | None:
        return self.commands.get(command_id)
