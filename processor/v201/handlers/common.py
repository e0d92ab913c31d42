"""Answering for an idToken in OCPP 2.0.1's terms, from the same
authorization list as 1.6's idTags (``ocpp:idtag:{token}``)."""

from __future__ import annotations

from typing import cast, get_args

from processor.handler_common import list_status
from processor.types import Context, IdTagRecord
from processor.v201.messages import IdTokenInfoType, IdTokenType
from processor.v201.messages.enums import AuthorizationStatusEnumType

_STATUSES = frozenset(get_args(AuthorizationStatusEnumType))
_NO_AUTHORIZATION = IdTagRecord("Accepted")


def id_token_info(
    ctx: Context,
    token: IdTokenType,
    record: IdTagRecord | None,
    charging_in: int | None,
    this_transaction: int = 0,
) -> IdTokenInfoType:
    """The answer for an idToken (:func:`processor.handler_common.list_status`).
    A ``NoAuthorization`` token asks for none and is accepted; one not on
    the list told ``Invalid`` is told ``Unknown``, 2.0.1's word for a token
    the CSMS does not know."""
    if token.type == "NoAuthorization":
        record = _NO_AUTHORIZATION
    status, expiry = list_status(ctx, record, charging_in, _STATUSES, this_transaction)
    if record is None and status == "Invalid":
        status = "Unknown"
    return IdTokenInfoType(
        status=cast(AuthorizationStatusEnumType, status), cache_expiry_date_time=expiry
    )
