"""NotifyReport, OCPP 2.0.1: a station's device model, reported in parts
(``seqNo``, ``tbc``) in answer to GetBaseReport or GetReport."""

from __future__ import annotations

from processor import clock, keys
from processor.handler_common import event, trusted_time
from processor.types import Context
from processor.v201.device_model import REPORT_TTL_S, record_report
from processor.v201.messages import NotifyReport, NotifyReportResponse


async def notify_report(ctx: Context, req: NotifyReport) -> NotifyReportResponse:
    """Each part's attributes to the device model; the report's progress
    (parts seen, the last) on its hash, which the command that asked for
    it created. Parts may come twice or out of order: each writes its own
    fields, and the report is complete once the part with ``tbc`` false and
    every part before it are in."""
    cp = ctx.charge_point_id
    when = trusted_time(ctx, req.generated_at, "NotifyReport")
    at = clock.stored(when)
    record_report(ctx.effects, cp, req.request_id, req.seq_no, at, req.report_data or [])
    progress = {f"part:{req.seq_no}": at}
    if not req.tbc:
        progress["last_part"] = str(req.seq_no)
    key = keys.report(cp, req.request_id)
    ctx.effects.hset(key, progress)
    ctx.effects.call("EXPIRE", key, REPORT_TTL_S)
    event(ctx, "NotifyReport", {"request_id": req.request_id, "seq_no": req.seq_no,
                                "tbc": str(req.tbc).lower(),
                                "attributes": sum(len(d.variable_attribute)
                                                  for d in req.report_data or [])},
          when)  # fmt: skip
    return NotifyReportResponse()
