"""What ``ocpp-api``'s lifespan puts on the app's state, typed: the Redis
client, the command queue and the history pool its /v1 routes and the
console's pages share."""

from __future__ import annotations

from litestar.datastructures import State
from redis.asyncio import Redis

from adapters.history_db import History
from processor.command_queue import CommandQueue


def redis_of(state: State) -> Redis:
    redis: Redis = state.redis
    return redis


def queue_of(state: State) -> CommandQueue:
    queue: CommandQueue = state.queue
    return queue


def history_of(state: State) -> History:
    history: History = state.history
    return history
