"""What every OCPP 1.6 payload shares: the field types the official JSON
schemas repeat (CiStrings) and the id tag answer several operations carry;
and, from processor.payload, what every OCPP version shares (the base
Struct, date-times, optional fields), so the 1.6 modules import all of it
from here.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from processor.payload import DateTime, Omittable, Payload

__all__ = [
    "AuthorizationStatus",
    "CiString20",
    "CiString25",
    "CiString50",
    "CiString255",
    "CiString500",
    "DateTime",
    "IdTagInfo",
    "IdToken",
    "Omittable",
    "Payload",
]

CiString20 = Annotated[str, msgspec.Meta(max_length=20)]
CiString25 = Annotated[str, msgspec.Meta(max_length=25)]
CiString50 = Annotated[str, msgspec.Meta(max_length=50)]
CiString255 = Annotated[str, msgspec.Meta(max_length=255)]
CiString500 = Annotated[str, msgspec.Meta(max_length=500)]
IdToken = CiString20

AuthorizationStatus = Literal["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"]


class IdTagInfo(Payload):
    """Whether an id tag may charge, and until when."""

    status: AuthorizationStatus
    expiry_date: Omittable[DateTime] = None
    parent_id_tag: Omittable[IdToken] = None
