"""A route: how one action's payload is decoded and which handler answers
it. Each OCPP version keeps its own table of them (``processor/v16/handlers``,
``processor/v201/handlers``); ``processor/protocols.py`` says which applies."""

from __future__ import annotations

from collections.abc import Callable
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
    # For a handler that reads state for some messages only: whether it
    # will for this one, from (charger, request decoded).
    reads_state_for: Callable[[str, Req], bool] | None = None


def route(
    request: type[Req],
    handler: Handler[Req, Resp],
    *,
    reads_state: bool | Callable[[str, Req], bool] = False,
) -> Route[Req, Resp]:
    """``reads_state``: whether the handler may await ctx.state, or a
    function telling it per message."""
    if callable(reads_state):
        return Route(msgspec.json.Decoder(request), handler, True, reads_state)
    return Route(msgspec.json.Decoder(request), handler, reads_state)
