"""The README's first command, as a user runs it: ``ocpp-demo`` on a
private redis-server and PostgreSQL, every service a real process."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from adapters.devstack import console_script

pytestmark = pytest.mark.slow


@pytest.mark.timeout(240)
def test_the_demo_runs_the_whole_stack_and_reads_history_back() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    done = subprocess.run([console_script("ocpp-demo")], env=env, capture_output=True, text=True,
                          timeout=220)  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "started a private redis-server" in out and "started a private PostgreSQL" in out
    assert "sessions completed  40" in out and ", 0 errors" in out
    # Half the fleet speaks OCPP 1.6, half 2.0.1, each through its sessions.
    assert "sessions completed  40 (ocpp1.6 20, ocpp2.0.1 20)" in out
    assert "chargers            20/20 connected (ocpp1.6 10, ocpp2.0.1 10)" in out
    assert "20 OCPP 2.0.1 (TransactionEvent Ended)" in out
    # A remote start through the API to each version's charger, in its own words.
    for cp, action in (("DEMO-0001", "RemoteStartTransaction"),
                       ("DEMO-0002", "RequestStartTransaction")):  # fmt: skip
        assert (
            f"/v1/charge-points/{cp}/commands/{action}?wait=10 -> answered, status Accepted" in out
        )
    closed = int(re.search(r"transactions closed in Redis: (\d+)", out).group(1))  # type: ignore[union-attr]
    # Every closed session reached PostgreSQL and is read back through the API.
    assert f"GET /v1/transactions?active=false -> {closed} closed transactions" in out
    assert re.search(r"\n    \d+ sampled values, e\.g\.:", out)
    assert ", 0 pending" in out
    assert re.search(r"exit codes \[(0, )+0\]", out)
    # The API had a token of the run's own, printed for whoever looks.
    assert re.search(r"the API: http://127\.0\.0\.1:\d+/v1 with Authorization: Bearer \S{24,}", out)
