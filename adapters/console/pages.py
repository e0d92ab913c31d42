"""The console's pages: GET handlers rendering templates, and the fragments
htmx swaps in to keep them live (``hx-trigger="every 2s"``; see
``mount.py`` for why polling). Each reads through ``queries.py`` and shapes
through ``views.py``; a history read that fails (PostgreSQL down, no
``DATABASE_URL``) shows its reason on the page instead of the data.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import MediaType, Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Template

from adapters import api_history as h
from adapters import api_queries as q
from adapters.api_models import (
    TransactionDetail,
    TransactionList,
    TransactionV201Detail,
    TransactionV201List,
)
from adapters.app_state import history_of, queue_of, redis_of
from adapters.console import queries as cq
from adapters.console import schemas
from adapters.console import views as v
from adapters.history_db import History, HistoryUnavailable
from processor.keys import ANOMALIES, DEAD
from processor.protocol_names import OCPP201

log = logging.getLogger("api")

# CSV export: all matching transactions, read a page at a time, up to this.
CSV_MAX_ROWS = 100_000
# 1.6 transaction ids are PostgreSQL int4 (and ours from 1): an id past
# these is none, and given to PostgreSQL would fail the query itself.
FIRST_ID, LAST_ID = 1, h.MAX_ID
# A stream entry id (``ms-seq``), each part a 64-bit unsigned integer.
_STREAM_ID = re.compile(r"(\d{1,20})-(\d{1,20})")
_U64 = 2**64 - 1


def is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


def now() -> datetime:
    return datetime.now(UTC)


def page(name: str, nav: str, status: int = 200, **context: Any) -> Template:
    """A template with what every page's layout wants: the time (for "ago")
    and which navigation entry is current."""
    return Template(name, context={"now": now(), "nav": nav, **context}, status_code=status)


# --- overview ----------------------------------------------------------------------


async def _overview(state: State) -> v.Overview:
    meter: v.RateMeter = state.console_meter
    return await cq.overview(redis_of(state), history_of(state), meter, now())


@get("/", name="overview")
async def overview(state: State) -> Template:
    return page("overview.html", "overview", o=await _overview(state))


@get("/overview/live")
async def overview_live(state: State) -> Template:
    return page("_overview.html", "overview", o=await _overview(state))


# --- chargers ----------------------------------------------------------------------


@get("/chargers", name="chargers")
async def chargers(
    request: Request[Any, Any, Any],
    state: State,
    q_: Annotated[str, QueryParameter(name="q")] = "",
    presence: FromQuery[str] = "",
    protocol: FromQuery[str] = "",
    seen: FromQuery[str] = "",
) -> Template:
    f = v.ChargerFilter(q=q_, presence=presence, protocol=protocol, seen=seen)
    at = now()
    found = v.charger_page(await cq.charger_rows(redis_of(state), at), f, at)
    name = "_charger_rows.html" if is_htmx(request) else "chargers.html"
    return page(name, "chargers", found=found, f=f, seen_windows=v.SEEN_WINDOWS,
                presence_labels=v.PRESENCE_LABELS, protocols=v.PROTOCOL_LABELS)  # fmt: skip


async def _detail(state: State, charge_point_id: FromPath[str]) -> cq.ChargerDetail:
    try:
        return await cq.charger_detail(
            redis_of(state), charge_point_id, queue_of(state).default_protocol
        )
    except q.NotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None


@get("/chargers/{charge_point_id:str}", name="charger")
async def charger(state: State, charge_point_id: FromPath[str]) -> Template:
    detail = await _detail(state, charge_point_id)
    history_error = None
    transactions: TransactionList | TransactionV201List = TransactionList(transactions=[])
    try:
        if detail.protocol == OCPP201:
            transactions = await h.list_sessions(
                history_of(state), charge_point_id=charge_point_id, limit=20
            )
        else:
            transactions = await h.list_transactions(
                history_of(state), charge_point_id=charge_point_id, limit=20
            )
    except HistoryUnavailable as exc:
        history_error = str(exc)
    return page(
        "charger.html", "chargers", d=detail, c=detail.charger,
        frames=await cq.frames(redis_of(state), charge_point_id),
        actions=schemas.actions(detail.protocol), transactions=transactions.transactions,
        history_error=history_error,
        presence=v.presence(detail.charger.last_boot, detail.charger.last_seen, now()),
    )  # fmt: skip


@get("/chargers/{charge_point_id:str}/live")
async def charger_live(state: State, charge_point_id: FromPath[str]) -> Template:
    detail = await _detail(state, charge_point_id)
    c = detail.charger
    return page("_charger_live.html", "chargers", d=detail, c=c,
                presence=v.presence(c.last_boot, c.last_seen, now()))  # fmt: skip


@get("/chargers/{charge_point_id:str}/frames")
async def charger_frames(state: State, charge_point_id: FromPath[str]) -> Template:
    found = await cq.frames(redis_of(state), charge_point_id)
    return page("_frames.html", "chargers", cp=charge_point_id, frames=found)


@get("/chargers/{charge_point_id:str}/command-form")
async def command_form(
    state: State, charge_point_id: FromPath[str], action: FromQuery[str] = ""
) -> Template:
    """The form for one command, generated in the browser from its schema."""
    protocol = await q.charger_protocol(
        redis_of(state), charge_point_id, queue_of(state).default_protocol
    )
    try:
        schema = schemas.request_schema(protocol, action)
    except KeyError:
        raise HTTPException(
            status_code=404, detail=f"{action} is not a {protocol} command"
        ) from None
    return page("_command_form.html", "chargers", cp=charge_point_id, action=action,
                schema_json=msgspec.json.encode(schema).decode())  # fmt: skip


@get("/commands/{command_id:str}")
async def command(state: State, command_id: FromPath[str]) -> Template:
    """A command's state, polled by its result fragment until it has an outcome."""
    record = await queue_of(state).get(command_id)
    if record is None:
        raise HTTPException(status_code=404, detail=f"command {command_id} is not known")
    return page("_command_result.html", "chargers", cmd=q.command_view(record),
                finished=q.is_finished(q.command_view(record)))  # fmt: skip


# --- transactions ------------------------------------------------------------------


async def transaction_filter(
    charge_point_id: FromQuery[str] = "", id_tag: FromQuery[str] = "",
    status: FromQuery[str] = "", start_day: FromQuery[str] = "", end_day: FromQuery[str] = "",
    protocol: FromQuery[str] = "",
) -> v.TransactionFilter:  # fmt: skip
    """The transaction list's filters, from its query; 400 for bad days or
    a protocol it does not list."""
    if protocol not in ("", OCPP201):
        raise HTTPException(status_code=400, detail=f"protocol is empty or {OCPP201}")
    f = v.TransactionFilter(charge_point_id=charge_point_id.strip(), id_tag=id_tag.strip(),
                            state=status, start_day=start_day, end_day=end_day,
                            protocol=protocol)  # fmt: skip
    try:
        f.started_from, f.started_to  # noqa: B018 (parsing them is the check)
    except ValueError:
        raise HTTPException(
            status_code=400,
            detail=f"days are YYYY-MM-DD, years {v.FIRST_YEAR} to {v.LAST_YEAR}",
        ) from None
    return f


def before_id(text: str) -> int:
    """``before`` of the 1.6 list as a transaction id; 400 for anything else."""
    if not (text.isascii() and text.isdigit()) or not FIRST_ID <= int(text) <= LAST_ID:
        raise HTTPException(
            status_code=400, detail=f"before is a transaction id, {FIRST_ID} to {LAST_ID}"
        )
    return int(text)


async def _page(history: History, f: v.TransactionFilter, limit: int, before: str
                ) -> TransactionList | TransactionV201List:  # fmt: skip
    """A page of 1.6 transactions (``before`` an id) or of 2.0.1 sessions
    (``before`` a cursor), as ``f`` says."""
    if f.v201:
        return await h.list_sessions(
            history, charge_point_id=f.charge_point_id or None, id_token=f.id_tag or None,
            active=f.active, started_from=f.started_from, started_to=f.started_to,
            limit=limit, before=before or None,
        )  # fmt: skip
    return await h.list_transactions(
        history, charge_point_id=f.charge_point_id or None, id_tag=f.id_tag or None,
        active=f.active, started_from=f.started_from, started_to=f.started_to, limit=limit,
        before=before_id(before) if before else None,
    )  # fmt: skip


# Both take the list's filters from the query, checked once here.
_FILTERED = {"f": Provide(transaction_filter)}


@get("/transactions", name="transactions", dependencies=_FILTERED)
async def transactions(
    state: State, f: NamedDependency[v.TransactionFilter], before: FromQuery[str] = ""
) -> Template:
    try:
        found = await _page(history_of(state), f, 50, before)
    except HistoryUnavailable as exc:
        return page("transactions.html", "transactions", 503, f=f, rows=[], next_before=None,
                    history_error=str(exc))  # fmt: skip
    return page("transactions.html", "transactions", f=f, rows=found.transactions,
                next_before=found.next_before, history_error=None)  # fmt: skip


@get("/transactions.csv", media_type="text/csv", dependencies=_FILTERED)
async def transactions_csv(state: State, f: NamedDependency[v.TransactionFilter]) -> Response[str]:
    """Every transaction (or 2.0.1 session) the filters match, as the /v1 API's CSV."""
    rows: list[Any] = []
    before = ""
    try:
        while len(rows) < CSV_MAX_ROWS:
            found = await _page(history_of(state), f, q.MAX_LIMIT, before)
            rows.extend(found.transactions)
            if found.next_before is None:
                break
            before = str(found.next_before)
    except HistoryUnavailable as exc:
        raise HTTPException(status_code=503, detail=str(exc)) from None
    stamp = now().strftime("%Y%m%dT%H%M%SZ")
    text = (h.sessions_csv if f.v201 else h.transactions_csv)(rows[:CSV_MAX_ROWS])
    name = "sessions-ocpp201" if f.v201 else "transactions"
    return Response(
        # Litestar adds "; charset=utf-8" to a text/ type itself.
        text, media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}-{stamp}.csv"'},
    )  # fmt: skip


@get("/transactions/{transaction_id:int}", name="transaction")
async def transaction(state: State, transaction_id: FromPath[int]) -> Template:
    if not FIRST_ID <= transaction_id <= LAST_ID:
        raise HTTPException(status_code=404, detail=f"there is no transaction #{transaction_id}: "
                            f"ids run from {FIRST_ID} to {LAST_ID}")  # fmt: skip
    try:
        t: TransactionDetail = await h.get_transaction(
            history_of(state), redis_of(state), transaction_id
        )
    except HistoryUnavailable as exc:
        return page("transaction.html", "transactions", 503, t=None, history_error=str(exc),
                    transaction_id=transaction_id)  # fmt: skip
    except q.NotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    return _with_meter_values("transaction.html", t, transaction_id)


@get("/sessions/{charge_point_id:str}/{transaction_id:str}", name="session")
async def session(state: State, charge_point_id: FromPath[str], transaction_id: FromPath[str]
                  ) -> Template:  # fmt: skip
    """An OCPP 2.0.1 session: named by its station and the station's id."""
    try:
        t: TransactionV201Detail = await h.get_session(
            history_of(state), redis_of(state), charge_point_id, transaction_id
        )
    except HistoryUnavailable as exc:
        return page("session.html", "transactions", 503, t=None, history_error=str(exc),
                    transaction_id=transaction_id)  # fmt: skip
    except q.NotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    return _with_meter_values("session.html", t, transaction_id)


def _with_meter_values(
    template: str, t: TransactionDetail | TransactionV201Detail, transaction_id: int | str
) -> Template:
    """A transaction's or session's page: its chart (counted from its meter
    start) and its signed readings."""
    chart = v.chart_data(t.meter_values, t.meter_start)
    return page(template, "transactions", t=t, chart=chart, history_error=None,
                signed=v.signed_values(t.meter_values), transaction_id=transaction_id,
                chart_json=_chart_json(chart))  # fmt: skip


def _chart_json(chart: v.ChartData) -> str:
    # Into a data- attribute, escaped as any other (no |safe anywhere).
    return msgspec.json.encode(chart).decode()


# --- authorization list, dead letters, anomalies ------------------------------------


# What a change to the list did, as the redirect after it names it: a
# query any link can set, so only these words are shown, never its text.
ID_TAG_DONE = frozenset({"saved", "blocked", "accepted", "expired", "removed"})


async def id_tags_page(state: State, status: int = 200, *, done: str = "", tag: str = "",
                       error: str = "") -> Template:  # fmt: skip
    """The authorization list, with what was done (``done`` one of
    :data:`ID_TAG_DONE`, to ``tag``) or why it was not (``error``: the
    console's own message, never read from the URL)."""
    rows, more = await cq.id_tags(redis_of(state))
    if done not in ID_TAG_DONE or not 1 <= len(tag) <= 20:
        done = tag = ""
    return page("id_tags.html", "id_tags", status, rows=rows, more=more, done=done, tag=tag,
                error=error, statuses=("Accepted", "Blocked", "Expired", "Invalid"))  # fmt: skip


@get("/id-tags", name="id_tags")
async def id_tags(state: State, done: FromQuery[str] = "", tag: FromQuery[str] = "") -> Template:
    return await id_tags_page(state, done=done, tag=tag)


def stream_before(before: str | None) -> str | None:
    """``before`` of a stream page: an entry id this page gave out (``ms-seq``),
    or none; 400 for anything else, which Redis would refuse as an error."""
    if not before:
        return None
    found = _STREAM_ID.fullmatch(before)
    if found is None or any(int(part) > _U64 for part in found.groups()) or before == "0-0":
        # (0-0 too: nothing is before it, and Redis refuses "(0-0" as a bound.)
        raise HTTPException(
            status_code=400, detail="before is a stream entry id, as 1700000000000-0"
        )
    return before


@get("/dead-letters", name="dead_letters")
async def dead_letters(state: State, before: FromQuery[str | None] = None) -> Template:
    entries, more = await cq.stream_page(redis_of(state), DEAD, "reason", stream_before(before))
    return page("stream.html", "dead_letters", title="Dead letters", entries=entries, more=more,
                what="reason", intro="Messages the processors could not handle: poison after "
                "too many deliveries, and input that does not decode.")  # fmt: skip


@get("/anomalies", name="anomalies")
async def anomalies(state: State, before: FromQuery[str | None] = None) -> Template:
    entries, more = await cq.stream_page(redis_of(state), ANOMALIES, "kind", stream_before(before))
    return page("stream.html", "anomalies", title="Anomalies", entries=entries, more=more,
                what="kind", intro="Odd but accepted input: stops of unknown transactions, "
                "clocks far ahead, second stops that differ.")  # fmt: skip


# --- errors ---------------------------------------------------------------------------
# Errors on console pages as a page (the /v1 API keeps its problem details);
# an htmx fragment gets the message alone. ``mount.py`` routes them here.


def error_response(request: Request[Any, Any, Any], status: int, detail: str,
                   headers: dict[str, str] | None = None) -> Response[Any]:  # fmt: skip
    if is_htmx(request):
        return Response(f"{status}: {detail}", status_code=status, media_type=MediaType.TEXT,
                        headers=headers)  # fmt: skip
    return Template("error.html", status_code=status, headers=headers,
                    context={"now": now(), "nav": "", "status": status,
                             "detail": detail})  # fmt: skip


def error_page(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return error_response(request, exc.status_code, exc.detail, exc.headers)


def invalid_input_page(request: Request[Any, Any, Any], exc: q.InvalidInput) -> Response[Any]:
    """What the /v1 reads refuse (a cursor this console did not give out)."""
    return error_response(request, 400, str(exc))


def not_found_page(request: Request[Any, Any, Any], exc: q.NotFound) -> Response[Any]:
    return error_response(request, 404, str(exc))


def failure_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Anything else: logged with its traceback; the page says no more
    than that (its text may hold what an operator should not see)."""
    log.exception("console %s %s failed", request.method, request.url.path)
    return error_response(request, 500, "The console failed to show this; the error is logged.")


PAGES = [overview, overview_live, chargers, charger, charger_live, charger_frames, command_form,
         command,
         transactions, transactions_csv, transaction, session, id_tags, dead_letters,
         anomalies]  # fmt: skip
