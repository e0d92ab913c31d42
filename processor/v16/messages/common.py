"""What every OCPP 1.6 payload shares: the base Struct, the field types the
official JSON schemas repeat (CiStrings, date-times, optional fields) and
the id tag answer several operations carry.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal, TypeAlias, TypeVar

import msgspec

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


CiString20 = Annotated[str, msgspec.Meta(max_length=20)]
CiString25 = Annotated[str, msgspec.Meta(max_length=25)]
CiString50 = Annotated[str, msgspec.Meta(max_length=50)]
CiString255 = Annotated[str, msgspec.Meta(max_length=255)]
CiString500 = Annotated[str, msgspec.Meta(max_length=500)]
IdToken = CiString20
# The schemas' "date-time" is RFC 3339, whose timestamps always carry an offset.
DateTime = Annotated[datetime, msgspec.Meta(tz=True)]

AuthorizationStatus = Literal["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"]


class Payload(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    """Base of every OCPP payload: camelCase on the wire, and, as the official
    schemas say (``additionalProperties: false``), no unknown fields."""


class IdTagInfo(Payload):
    """Whether an id tag may charge, and until when."""

    status: AuthorizationStatus
    expiry_date: Omittable[DateTime] = None
    parent_id_tag: Omittable[IdToken] = None
