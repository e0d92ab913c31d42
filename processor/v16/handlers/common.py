"""Answering for an idTag in OCPP 1.6's terms."""

from __future__ import annotations

from typing import cast, get_args

from processor.handler_common import list_status
from processor.types import Context, IdTagRecord
from processor.v16.messages import IdTagInfo
from processor.v16.messages.common import AuthorizationStatus

_STATUSES = frozenset(get_args(AuthorizationStatus))


def id_tag_info(
    ctx: Context, record: IdTagRecord | None, charging_in: int | None, this_transaction: int = 0
) -> IdTagInfo:
    """The answer for an idTag (:func:`processor.handler_common.list_status`),
    with its parent when it has one the schema can hold."""
    status, expiry = list_status(ctx, record, charging_in, _STATUSES, this_transaction)
    parent = None
    if record is not None and 0 < len(record.parent_id_tag or "") <= 20:
        parent = record.parent_id_tag
    return IdTagInfo(
        status=cast(AuthorizationStatus, status), expiry_date=expiry, parent_id_tag=parent
    )
