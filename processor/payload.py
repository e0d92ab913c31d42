"""What every OCPP version's payload Structs share: the base Structs and the
field types both the 1.6 and the 2.0.1 JSON schemas repeat (optional fields,
date-times). The 1.6 messages are written by hand and the 2.0.1 ones
generated (tools/v201_messages.py); both build on these, so the versions
decode and encode alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, TypeAlias, TypeVar

import msgspec

__all__ = ["DateTime", "ExtensiblePayload", "Omittable", "Payload"]

if TYPE_CHECKING:
    _T = TypeVar("_T")
    Omittable: TypeAlias = _T | None
else:

    class Omittable:
        """A field the payload may leave out: ``None`` when absent, left out
        again on encoding (``omit_defaults``), but an explicit ``null`` is
        refused, as the schemas allow none. Type checkers see ``T | None``;
        msgspec sees only ``T``, so it decodes no ``null`` into ``None``."""

        def __class_getitem__(cls, item: object) -> object:
            return item


# The schemas' "date-time" is RFC 3339, whose timestamps always carry an offset.
DateTime = Annotated[datetime, msgspec.Meta(tz=True)]


class Payload(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    """Base of every OCPP payload: camelCase on the wire, and, as the official
    schemas say (``additionalProperties: false``), no unknown fields."""


class ExtensiblePayload(msgspec.Struct, rename="camel", omit_defaults=True):
    """Base of the one object the 2.0.1 schemas leave open (``CustomDataType``):
    fields it does not know are accepted, and dropped."""
