"""A route: how one action's payload is decoded and which handler answers
it. Each OCPP version keeps its own table of them (``processor/v16/handlers``,
``processor/v201/handlers``); ``processor/protocols.py`` says which applies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic

import msgspec

from processor.types import Handler, Req, Resp


@dataclass(frozen=True, slots=True)
class Route(Generic[Req, Resp]):
    """How to decode one action's payload and which handler answers it."""

    decoder: msgspec.json.Decoder[Req]
    handler: Handler[Req, Resp]
    # Whether the handler may await ctx.state. Those that don't never
    # suspend, so the dispatcher runs them inline instead of paying for a task.
    reads_state: bool


def route(
    request: type[Req], handler: Handler[Req, Resp], *, reads_state: bool = False
) -> Route[Req, Resp]:
    return Route(msgspec.json.Decoder(request), handler, reads_state)
