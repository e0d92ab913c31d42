"""All 40 OCPP 2.0.1 commands through the real HTTP API (``ocpp-api``, with
its token), the command queue, the processor and the gateway to the ``ocpp``
package's 2.0.1 charge point, which checks each request against the official
schema on arrival; each answer comes back through the same path as the
command's result, and those that change what we know of the station do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from ocpp.charge_point import camel_to_snake_case, snake_to_camel_case
from ocpp.routing import on
from ocpp.v201 import ChargePoint
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201

from tests.adapters.test_api import TOKEN, ApiServer
from tests.integration.test_archiver import stop_all
from tests.integration.test_v201 import stack, station
from tests.v201_commands import EXAMPLES

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

CS = "CS-CMDS"
TIMEOUT = 10.0


def _answering(action: str) -> Any:
    """A handler that keeps the request as it came (camelCase again) and
    gives the example's answer."""

    async def handler(self: Station, **request: Any) -> Any:
        self.received[action] = snake_to_camel_case(request)
        return getattr(result201, action)(**camel_to_snake_case(EXAMPLES[action][1]))

    # The package routes by the name the handler is set under.
    handler.__name__ = f"on_{action}"
    return on(action)(handler)


class Station(ChargePoint):  # type: ignore[misc]
    """Answers every command with its example's answer, keeping each request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: dict[str, Any] = {}


for _action in EXAMPLES:
    setattr(Station, f"on_{_action}", _answering(_action))


@pytest.fixture
def api_stack(redis_db: str) -> Iterator[tuple[int, ApiServer]]:
    port, services = stack(redis_db)
    try:
        api = ApiServer(redis_db, TOKEN)
    except BaseException:
        stop_all(*services)
        raise
    yield port, api
    stop_all(api.service, *services)


async def test_every_command_goes_through_the_api_and_comes_back_answered(
    api_stack: tuple[int, ApiServer], redis_db: str
) -> None:
    port, api = api_stack
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with (
        station(port, CS, Station) as cp,
        httpx.AsyncClient(base_url=api.base, headers=headers) as h,
    ):
        boot = await cp.call(call201.BootNotification(
            charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"))  # fmt: skip
        assert boot.status == "Accepted"
        # In name order: GetVariables comes before SetVariables, and
        # GetLocalListVersion before SendLocalList.
        for action, (request, answer) in sorted(EXAMPLES.items()):
            resp = await h.post(f"/v1/charge-points/{CS}/commands/{action}", json=request,
                                params={"wait": TIMEOUT}, timeout=TIMEOUT + 5)  # fmt: skip
            assert resp.status_code == 200, (action, resp.text)
            command = resp.json()
            assert (command["state"], command["result"]) == ("answered", answer), action
            assert command["round_trip_ms"] >= 0
            assert cp.received[action] == request, action
    assert sorted(cp.received) == sorted(EXAMPLES)

    # What the answers told us of the station.
    with redis.Redis.from_url(redis_db, decode_responses=True) as r:
        field = '["OCPPCommCtrlr","",null,null,"HeartbeatInterval","","Actual"]'
        assert r.hget(f"ocpp:cp:{CS}:variables", field) == "60"  # got 300, then set 60
        assert r.hget(f"ocpp:cp:{CS}", "local_list_version") == "6"  # was 5, then sent 6
        base, report = (r.hgetall(f"ocpp:cp:{CS}:report:{n}") for n in (21, 22))
        assert (base["action"], base["status"]) == ("GetBaseReport", "Accepted")
        assert (report["action"], report["status"]) == ("GetReport", "EmptyResultSet")
