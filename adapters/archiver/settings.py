"""``ocpp-archiver``'s settings, read like every service's (``processor.settings.load``)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

DatabaseUrl = Annotated[str, Meta(description="PostgreSQL to write history to (postgresql://...)")]


class ArchiverSettings(msgspec.Struct, kw_only=True, frozen=True):
    database_url: DatabaseUrl = "postgresql://localhost:5432/ocpp"
