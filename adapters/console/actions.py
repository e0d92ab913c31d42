"""What the console changes: commands sent to chargers, and the
authorization list. Every one goes through what the /v1 API calls
(``adapters/api_queries.py``), so a command is validated against the
charger's OCPP version and queued exactly as ``POST /v1/.../commands`` does.
Each POST carries the CSRF token (``mount.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from litestar import post
from litestar.datastructures import State
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from adapters import api_queries as q
from adapters.app_state import queue_of, redis_of
from adapters.console.pages import id_tags_page, now, page
from processor import clock

Form = Body(media_type=RequestEncodingType.URL_ENCODED)
# A charger has this long to answer a command sent from the console.
COMMAND_TIMEOUT_S = 30.0


class CommandForm(msgspec.Struct, kw_only=True):
    payload: str = "{}"


@post("/chargers/{charge_point_id:str}/commands/{action:str}", status_code=202)
async def send_command(
    state: State,
    charge_point_id: FromPath[str],
    action: FromPath[str],
    data: Annotated[CommandForm, Form],
) -> Template:
    """Queue the command; the fragment returned polls it until it has an
    outcome. A request the action's type refuses comes back as 422 with
    the reason, shown where the result would be."""
    try:
        cmd = await q.send_command(
            redis_of(state), queue_of(state), charge_point_id, action, data.payload.encode(),
            timeout_s=COMMAND_TIMEOUT_S,
        )  # fmt: skip
    except (q.InvalidInput, q.NotFound) as exc:
        return page("_command_refused.html", "chargers", 422, action=action, reason=str(exc))
    return page("_command_result.html", "chargers", 202, cmd=cmd, finished=q.is_finished(cmd))


# --- the authorization list -------------------------------------------------------


class IdTagForm(msgspec.Struct, kw_only=True):
    id_tag: str = ""
    status: str = "Accepted"
    # datetime-local: no zone; the form says UTC.
    expiry_date: str = ""
    parent_id_tag: str = ""


def _back(done: str, tag: str) -> Redirect:
    """To the list, saying what was done (a word the list page knows)."""
    query = urlencode({"done": done, "tag": tag})
    return Redirect(f"/id-tags?{query}", status_code=HTTP_303_SEE_OTHER)


async def _refused(state: State, exc: q.InvalidInput | q.NotFound) -> Template:
    """The list again, saying why the change was not made: rendered here,
    not redirected to, so no URL can make the page say it."""
    status = 404 if isinstance(exc, q.NotFound) else 400
    return await id_tags_page(state, status, error=str(exc))


def _expiry(text: str) -> str | None:
    """A datetime-local value (UTC by the form's word) as RFC 3339."""
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise q.InvalidInput(f"expiry {text!r} is not a date and time") from None
    return clock.wire(at if at.tzinfo else at.replace(tzinfo=UTC))


async def _put(state: State, tag: FromPath[str], status: str, expiry: str | None,
               parent: str | None) -> None:  # fmt: skip
    body = q.id_tag_body(status, expiry, parent)
    await q.put_id_tag(redis_of(state), tag, body)


@post("/id-tags", status_code=HTTP_303_SEE_OTHER)
async def put_id_tag(state: State, data: Annotated[IdTagForm, Form]) -> Redirect | Template:
    tag = data.id_tag.strip()
    try:
        q.check_id_tag(tag)
        await _put(state, tag, data.status, _expiry(data.expiry_date),
                   data.parent_id_tag.strip() or None)  # fmt: skip
    except q.InvalidInput as exc:
        return await _refused(state, exc)
    return _back("saved", tag)


async def _change(state: State, tag: FromPath[str], **change: Any) -> Redirect | Template:
    """Rewrite ``tag``'s entry with ``change`` applied to what it holds."""
    try:
        entry = await q.get_id_tag(redis_of(state), tag)
        fields = {"status": entry.status, "expiry": entry.expiry_date,
                  "parent": entry.parent_id_tag, **change}  # fmt: skip
        await _put(state, tag, fields["status"], fields["expiry"], fields["parent"])
    except (q.InvalidInput, q.NotFound) as exc:
        return await _refused(state, exc)
    return _back(change.get("status", "expired").lower(), tag)


@post("/id-tags/{tag:str}/block", status_code=HTTP_303_SEE_OTHER)
async def block_id_tag(state: State, tag: FromPath[str]) -> Redirect | Template:
    return await _change(state, tag, status="Blocked")


@post("/id-tags/{tag:str}/accept", status_code=HTTP_303_SEE_OTHER)
async def accept_id_tag(state: State, tag: FromPath[str]) -> Redirect | Template:
    return await _change(state, tag, status="Accepted")


@post("/id-tags/{tag:str}/expire", status_code=HTTP_303_SEE_OTHER)
async def expire_id_tag(state: State, tag: FromPath[str]) -> Redirect | Template:
    """Expiry set to now: from the next Authorize on, the tag is Expired."""
    return await _change(state, tag, expiry=clock.wire(now()))


@post("/id-tags/{tag:str}/delete", status_code=HTTP_303_SEE_OTHER)
async def delete_id_tag(state: State, tag: FromPath[str]) -> Redirect | Template:
    try:
        await q.delete_id_tag(redis_of(state), tag)
    except (q.InvalidInput, q.NotFound) as exc:
        return await _refused(state, exc)
    return _back("removed", tag)


ACTIONS: list[Any] = [send_command, put_id_tag, block_id_tag, accept_id_tag, expire_id_tag,
                      delete_id_tag]  # fmt: skip
