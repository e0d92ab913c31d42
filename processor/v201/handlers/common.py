"""Answering for an idToken in OCPP 2.0.1's terms, from the same
authorization list as 1.6's idTags (``ocpp:idtag:{token}``)."""

from __future__ import annotations

from typing import cast, get_args

from processor import clock
from processor.types import Context, IdTagRecord
from processor.v201.messages import IdTokenInfoType, IdTokenType
from processor.v201.messages.enums import AuthorizationStatusEnumType

_STATUSES = frozenset(get_args(AuthorizationStatusEnumType))


def id_token_info(
    ctx: Context,
    token: IdTokenType,
    record: IdTagRecord | None,
    charging_in: int | None,
    this_transaction: int = 0,
) -> IdTokenInfoType:
    """The answer for an idToken: its list entry, expired if past its expiry
    date, ConcurrentTx if it charges in another transaction (unless allowed);
    one not on the list is told the configured status (``Invalid`` reads
    ``Unknown`` here, 2.0.1's word for a token the CSMS does not know). A
    ``NoAuthorization`` token asks for none and is accepted."""
    concurrent = charging_in is not None and charging_in != this_transaction
    expiry = None
    if token.type == "NoAuthorization":
        status: AuthorizationStatusEnumType = "Accepted"
    elif record is None:
        unknown = ctx.config.unknown_id_tag_status
        status = "Unknown" if unknown == "Invalid" else unknown
    else:
        status = cast(
            AuthorizationStatusEnumType, record.status if record.status in _STATUSES else "Invalid"
        )
        expiry = clock.parse(record.expiry_date)
    if status == "Accepted" and expiry is not None and expiry <= ctx.now:
        status = "Expired"
    if status == "Accepted" and concurrent and not ctx.config.allow_concurrent_tx:
        status = "ConcurrentTx"
    return IdTokenInfoType(status=status, cache_expiry_date_time=expiry)
