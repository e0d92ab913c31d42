"""The services' side of the exporter process's socket: records are held a
moment in an event loop to share a frame, and never held where nothing
would flush them."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator

import anyio
import pytest

from processor.span_record import SpanRecord
from processor.spans import FRAME_DECODER, RECORDS_PER_FRAME, SOCKET_BUFFER, Shipper


def record(n: int) -> SpanRecord:
    return SpanRecord("s", f"span {n}", 1, "1" * 32, f"{n + 1:016x}", "", 1, 2, {})


@pytest.fixture
def pair() -> Iterator[tuple[Shipper, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    yield Shipper(ours, process), theirs
    ours.close()
    theirs.close()
    process.wait()


def waiting(sock: socket.socket) -> list[str]:
    """Names of the records in the frame waiting on ``sock``; [] if none."""
    try:
        frame = sock.recv(SOCKET_BUFFER, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return []
    return [r.name for r in FRAME_DECODER.decode(frame)]


def test_outside_an_event_loop_records_go_at_once(pair: tuple[Shipper, socket.socket]) -> None:
    shipper, theirs = pair
    shipper.record([record(1)])
    assert waiting(theirs) == ["span 1"]


def test_in_a_loop_records_wait_to_share_a_frame_even_across_loops(
    pair: tuple[Shipper, socket.socket],
) -> None:
    shipper, theirs = pair

    async def first() -> None:
        shipper.record([record(1)])
        shipper.record([record(2)])
        assert waiting(theirs) == []  # held for a flush the loop would run later

    asyncio.run(first())  # and the loop is gone before that flush was due

    async def second() -> None:
        shipper.record([record(3)])
        with anyio.fail_after(5):
            await anyio.wait_readable(theirs)

    anyio.run(second)
    assert waiting(theirs) == ["span 1", "span 2", "span 3"]


def test_a_full_frame_goes_without_waiting(pair: tuple[Shipper, socket.socket]) -> None:
    shipper, theirs = pair

    async def burst() -> list[str]:
        shipper.record([record(n) for n in range(RECORDS_PER_FRAME + 50)])
        return waiting(theirs)

    assert len(anyio.run(burst)) == RECORDS_PER_FRAME  # one full frame at once
    assert len(waiting(theirs)) == 50  # and, in the same send, the rest


def test_a_frame_too_big_for_the_socket_goes_in_halves(
    pair: tuple[Shipper, socket.socket],
) -> None:
    shipper, theirs = pair
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    ours = shipper._sock
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)  # the kernel doubles it
    big = "x" * 4000
    records = [
        SpanRecord("s", f"span {n}", 1, "1" * 32, f"{n + 1:016x}", "", 1, 2, {"a": big})
        for n in range(60)
    ]  # ~240 kB in one frame: more than one datagram may hold
    shipper.record(records)  # outside a loop: sent at once
    got: list[str] = []
    while names := waiting(theirs):
        got += names
    # Halved, the first half fits; nobody reads (the exporter would), so the
    # second finds the buffer full and is dropped, counted, not blocked on.
    assert got == [r.name for r in records[:30]]
    assert shipper.dropped == 30
