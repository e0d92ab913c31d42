"""The private PostgreSQL the tests and the demo start (``PostgresServer``)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from adapters import devstack
from adapters.devstack import PostgresServer, listening


async def _query(url: str, sql: str) -> object:
    connection = await asyncpg.connect(url)
    try:
        if ";" in sql:  # several statements: the simple protocol, which returns no value
            return await connection.execute(sql)
        return await connection.fetchval(sql)
    finally:
        await connection.close()


@pytest.mark.slow
def test_killed_and_restarted_it_keeps_its_data(private_postgres: PostgresServer) -> None:
    url = private_postgres.url
    asyncio.run(_query(url, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)"))
    assert asyncio.run(_query(url, "SHOW fsync")) == "on"
    assert asyncio.run(_query(url, "SHOW listen_addresses")) == "127.0.0.1"

    private_postgres.kill()  # every process of the server, backends included
    assert not listening(private_postgres.port)
    private_postgres.start()  # crash recovery from the WAL

    assert asyncio.run(_query(url, "SELECT x FROM kept")) == 42
    private_postgres.restart()  # and a clean stop and start
    assert asyncio.run(_query(url, "SELECT x FROM kept")) == 42


def test_missing_postgresql_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devstack.shutil, "which", lambda name: None)
    monkeypatch.setattr(devstack.glob, "glob", lambda pattern: [])
    with pytest.raises(RuntimeError, match="apt-get install -y postgresql"):
        PostgresServer()
