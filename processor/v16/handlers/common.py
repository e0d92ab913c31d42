"""Answering for an idTag in OCPP 1.6's terms."""

from __future__ import annotations

from typing import cast, get_args

from processor import clock
from processor.types import Context, IdTagRecord
from processor.v16.messages import IdTagInfo
from processor.v16.messages.common import AuthorizationStatus

_STATUSES = frozenset(get_args(AuthorizationStatus))


def id_tag_info(
    ctx: Context, record: IdTagRecord | None, charging_in: int | None, this_transaction: int = 0
) -> IdTagInfo:
    """The answer for an idTag: its list entry, expired if past its expiry
    date, ConcurrentTx if it is charging in another transaction (unless
    allowed); the configured status if it is not on the list."""
    concurrent = charging_in is not None and charging_in != this_transaction
    if record is None:
        status: AuthorizationStatus = ctx.config.unknown_id_tag_status
        expiry, parent = None, None
    else:
        # An entry an operator wrote by hand may hold anything: a status we
        # do not know refuses the tag, a parent too long for the schema is
        # left out rather than sent.
        status = cast(
            AuthorizationStatus, record.status if record.status in _STATUSES else "Invalid"
        )
        expiry = clock.parse(record.expiry_date)
        parent = record.parent_id_tag if 0 < len(record.parent_id_tag or "") <= 20 else None
    if status == "Accepted" and expiry is not None and expiry <= ctx.now:
        status = "Expired"
    if status == "Accepted" and concurrent and not ctx.config.allow_concurrent_tx:
        status = "ConcurrentTx"
    return IdTagInfo(status=status, expiry_date=expiry, parent_id_tag=parent)
