"""TransactionEvent, OCPP 2.0.1: a session told as Started, Updated and Ended
events, each numbered by the station (``seqNo``), which may arrive late,
twice (a retry under a new message id) or out of order (an offline queue).

Every write is one that gives the same state whatever the order and however
often it is applied, so no event needs to be recognised as seen:

* the session's start and end are set where still empty (``HSETNX``);
  its EVSE (which only the first event should carry) and its idToken are
  kept from the lowest ``seqNo`` that names them, so a StopAuthorized
  Ended with another card, however early it comes, does not replace the
  card that started it;
* what changes during the session (charging state, last trigger) is kept
  from the highest ``seqNo`` (``hset_newer``);
* an ``Ended`` is always applied, and a late ``Updated`` cannot reopen what
  it ended: nothing clears ``ended_at``;
* a periodic ``Updated`` (meter values and nothing else, most of a
  session's events) writes its readings alone, as 1.6's MeterValues does.

History is keyed the same way: PostgreSQL keeps one row per (station,
transactionId, seqNo) of each event that says something of the session,
and fills the transaction's row only where empty. The key expires
``OCPP_CLOSED_TRANSACTION_TTL_S`` after the latest such event.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from processor import clock, history, keys
from processor.handler_common import (
    refuse_unknown_under_known_only,
    trusted_time,
)
from processor.types import Context
from processor.v201.handlers.common import id_token_info
from processor.v201.handlers.metering import MAX_MULTIPLIER, store_samples
from processor.v201.messages import (
    IdTokenInfoType,
    MeterValueType,
    TransactionEvent,
    TransactionEventResponse,
)

# seqNo as fixed-width text, so the newest-wins comparison is by number.
_SEQ_WIDTH = 20
# The EVSE of each transaction seen lately, (station, transactionId) ->
# EVSE id. Only the first event names it, and it never changes, so any
# replica may keep it: a later event (in this batch, before the first one's
# commit, or in the next) finds it here without reading Redis. Bounded; the
# oldest forgotten first.
_EVSES: dict[tuple[str, str], int] = {}
_EVSES_MAX = 100_000


def _remember(key: tuple[str, str], evse_id: int) -> None:
    """Keep the first EVSE said, as hot state does (HSETNX)."""
    if key in _EVSES:
        return
    if len(_EVSES) >= _EVSES_MAX:
        del _EVSES[next(iter(_EVSES))]
    _EVSES[key] = evse_id


def transaction_event_reads_state(cp: str, req: TransactionEvent) -> bool:
    """Whether :func:`transaction_event` will await state for this event: a
    Started (the allow-list), an idToken (the authorization list), readings
    of a session whose EVSE is not known here. Most events, a periodic
    Updated of a session this replica has seen, read nothing, and are
    handled inline rather than in a task. (Should its EVSE be forgotten in
    between, the oldest of 100,000, it is read inline, maybe before the
    previous batch's commit is in: at worst its readings' latest values go
    under EVSE 0, as before the first event.)"""
    return (
        req.event_type == "Started"
        or req.id_token is not None
        or (bool(req.meter_value) and req.evse is None
            and (cp, req.transaction_info.transaction_id) not in _EVSES)
    )  # fmt: skip


async def _evse_of(ctx: Context, req: TransactionEvent) -> int | None:
    """The transaction's EVSE: the event's, remembered, or hot state's."""
    key = (ctx.charge_point_id, req.transaction_info.transaction_id)
    if req.evse is not None:
        _remember(key, req.evse.id)
    known = _EVSES.get(key)
    if known is None:
        held = await ctx.state.transaction_v201(*key)
        known = _int(held.get("evse_id"))
        if known is not None:
            _remember(key, known)
    return known


_SEQ_MAX = 10**_SEQ_WIDTH - 1


def _seq(seq_no: int) -> str:
    return f"{min(max(seq_no, 0), _SEQ_MAX):0{_SEQ_WIDTH}d}"


def _earlier_wins(seq_no: int) -> str:
    """seqNo as a newest-wins stamp that the lowest seqNo beats."""
    return _seq(_SEQ_MAX - min(max(seq_no, 0), _SEQ_MAX))


# A register in Wh PostgreSQL's bigint holds (and energy_wh, their difference).
_MAX_WH = 2**62


def _register(readings: Sequence[MeterValueType], context: str) -> int | None:
    """The energy register in Wh among the readings of ``context``
    (Transaction.Begin, Transaction.End), if the station sent one: the
    total's (no phase) before a phase's. None for one no bigint holds."""
    found = [
        sv for reading in readings for sv in reading.sampled_value
        if (sv.measurand or "Energy.Active.Import.Register") == "Energy.Active.Import.Register"
        and sv.context == context
    ]  # fmt: skip
    if not found:
        return None
    sv = min(found, key=lambda x: x.phase is not None)
    unit = sv.unit_of_measure
    multiplier = (unit.multiplier if unit is not None else 0) + (
        3 if unit is not None and unit.unit == "kWh" else 0
    )
    if abs(multiplier) > MAX_MULTIPLIER:
        return None
    wh = int(Decimal(repr(sv.value)).scaleb(multiplier).to_integral_value())
    return wh if abs(wh) < _MAX_WH else None


def _int(text: str | None) -> int | None:
    return int(text) if text else None


def _stated_once(req: TransactionEvent, stamp: str) -> dict[str, str | int]:
    """The session's facts this event states that are set once (HSETNX):
    its start, its end, and ids a station gives once."""
    info = req.transaction_info
    once: dict[str, str | int] = {}
    if info.remote_start_id is not None:
        once["remote_start_id"] = info.remote_start_id
    if req.reservation_id is not None:
        once["reservation_id"] = req.reservation_id
    if req.event_type == "Started":
        once["started_at"] = stamp
    if req.event_type == "Ended":
        once["ended_at"] = stamp
        once["stopped_reason"] = info.stopped_reason or "Local"  # absent: Local (E06)
    return once


def _earliest(req: TransactionEvent) -> list[tuple[str, dict[str, str | int]]]:
    """Facts a later event may state otherwise (an EVSE, an idToken: a
    StopAuthorized Ended names the card that stopped the session): the
    session keeps what the lowest seqNo said, whatever order they come
    in. As (the field holding that seqNo, the facts)."""
    out: list[tuple[str, dict[str, str | int]]] = []
    if req.evse is not None:
        evse: dict[str, str | int] = {"evse_id": req.evse.id}
        if req.evse.connector_id is not None:
            evse["connector_id"] = req.evse.connector_id
        out.append(("evse_seq", evse))
    if req.id_token is not None:
        token: dict[str, str | int] = {
            "id_token": req.id_token.id_token,
            "id_token_type": req.id_token.type,
        }
        out.append(("id_token_seq", token))
    return out


async def transaction_event(ctx: Context, req: TransactionEvent) -> TransactionEventResponse:
    cp = ctx.charge_point_id
    info = req.transaction_info
    if req.event_type == "Started":
        # As 1.6's StartTransaction: no session opens for a station not on
        # the allow-list. Its later events are still taken (an Ended
        # refused would be sent again and again).
        await refuse_unknown_under_known_only(ctx)
    key = keys.transaction_v201(cp, info.transaction_id)
    stamp = clock.stored(trusted_time(ctx, req.timestamp, "TransactionEvent"))
    connector_id = req.evse.connector_id if req.evse is not None else None

    # A periodic Updated (most of a session's events) says nothing of the
    # session but its meter values: like 1.6's MeterValues, it writes those
    # alone, and no event row (its readings are keyed by their content).
    # (Nothing it holds is stated once nor earliest: see _stated_once and
    # _earliest.)
    says = (req.event_type != "Updated" or req.trigger_reason != "MeterValuePeriodic"
            or info.charging_state is not None or req.evse is not None
            or req.id_token is not None or info.remote_start_id is not None
            or req.reservation_id is not None)  # fmt: skip
    if says:
        for name, value in _stated_once(req, stamp).items():
            ctx.effects.call("HSETNX", key, name, value)
        for seq_field, facts in _earliest(req):
            ctx.effects.hset_newer(key, facts, timestamp_field=seq_field,
                                   timestamp=_earlier_wins(req.seq_no))  # fmt: skip
        # The session's state, kept from the highest seqNo that changed it.
        current = {"event_type": req.event_type, "trigger_reason": req.trigger_reason,
                   "last_event_at": stamp}  # fmt: skip
        if info.charging_state is not None:
            current["charging_state"] = info.charging_state
        ctx.effects.hset_newer(key, current, timestamp_field="seq_no", timestamp=_seq(req.seq_no))
        ctx.effects.call("EXPIRE", key, ctx.config.closed_transaction_ttl_s)

    readings = req.meter_value or []
    if readings:
        # The EVSE only matters to where the latest values go: looked up
        # only then. Before it is known (the first event still to come),
        # under 0.
        evse_id = await _evse_of(ctx, req)
        store_samples(ctx, evse_id or 0, readings, info.transaction_id)
    elif req.evse is not None:
        _remember((cp, info.transaction_id), req.evse.id)
    context = {"Started": "Transaction.Begin", "Ended": "Transaction.End"}.get(req.event_type)
    meter = _register(readings, context) if context else None

    token_info: IdTokenInfoType | None = None
    if req.id_token is not None:
        record, charging_in = await ctx.state.id_tag(req.id_token.id_token)
        token_info = id_token_info(ctx, req.id_token, record, charging_in)
    if not says:
        return TransactionEventResponse()
    ctx.effects.record(
        history.TransactionEvent(
            cp, info.transaction_id, req.seq_no, req.event_type, req.trigger_reason, stamp,
            req.offline, req.evse.id if req.evse is not None else None, connector_id,
            req.id_token.id_token if req.id_token is not None else None,
            req.id_token.type if req.id_token is not None else None,
            token_info.status if token_info is not None else None,
            info.charging_state, info.stopped_reason, info.remote_start_id, req.reservation_id,
            meter,
        )
    )  # fmt: skip
    return TransactionEventResponse(id_token_info=token_info)
