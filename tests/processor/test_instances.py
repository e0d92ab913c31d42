"""What an entry of ``ocpp:instances`` holds and when it counts as dead,
without Redis."""

from __future__ import annotations

import msgspec

from processor.instances import (
    STALE_AFTER_MS,
    Instance,
    decode,
    encode,
    health_url,
    is_stale,
    listing,
    sort_out,
)

NOW = 1_700_000_000_000


def instance(service: str = "processor", pid: int = 42, seen_ms_ago: int = 0) -> Instance:
    return Instance(
        service=service, host="node-1", pid=pid, health_url="http://node-1:41234",
        consumer=f"node-1-{pid}" if service == "processor" else "",
        started_ms=NOW - 60_000, last_seen_ms=NOW - seen_ms_ago,
    )  # fmt: skip


def test_one_field_per_process() -> None:
    assert instance().field == "processor@node-1:42"
    assert instance("adapter", 7).field == "adapter@node-1:7"


def test_encoded_as_json_an_operator_can_read() -> None:
    raw = encode(instance())
    assert msgspec.json.decode(raw) == {
        "service": "processor", "host": "node-1", "pid": 42,
        "health_url": "http://node-1:41234", "consumer": "node-1-42",
        "started_ms": NOW - 60_000, "last_seen_ms": NOW,
    }  # fmt: skip
    assert decode(raw) == instance()
    assert decode(raw.decode()) == instance()


def test_what_is_not_an_instance_decodes_to_none() -> None:
    for raw in (b"", b"not json", b"[]", b'{"service": "processor"}', b'{"pid": "x"}'):
        assert decode(raw) is None, raw


def test_the_health_url_names_the_host_for_a_wildcard_address() -> None:
    assert health_url("node-1", "0.0.0.0", 9101) == "http://node-1:9101"
    assert health_url("node-1", "::", 9101) == "http://node-1:9101"
    assert health_url("node-1", "10.0.0.5", 9101) == "http://10.0.0.5:9101"
    assert health_url("node-1", "fd00::5", 9101) == "http://[fd00::5]:9101"
    assert health_url("node-1", "", 0) == ""


def test_stale_after_three_refreshes_missed() -> None:
    assert STALE_AFTER_MS == 30_000
    assert not is_stale(instance(seen_ms_ago=STALE_AFTER_MS), NOW)
    assert is_stale(instance(seen_ms_ago=STALE_AFTER_MS + 1), NOW)
    # A writer whose clock runs ahead is alive, not stale.
    assert not is_stale(instance(seen_ms_ago=-5_000), NOW)


def test_sort_out_keeps_the_live_and_names_the_dead() -> None:
    live_a, live_b = instance("processor", 9), instance("adapter", 8, seen_ms_ago=29_000)
    killed = instance("processor", 3, seen_ms_ago=31_000)
    entries: dict[bytes | str, bytes | str] = {
        live_a.field.encode(): encode(live_a),
        killed.field.encode(): encode(killed),
        b"junk": b"{",
        live_b.field.encode(): encode(live_b),
    }
    live, dead = sort_out(entries, NOW)
    assert live == [live_b, live_a]  # by service, host, pid
    assert sorted(dead) == sorted([killed.field.encode(), b"junk"])


def test_listing_says_how_long_ago_each_was_seen() -> None:
    shown = msgspec.to_builtins(listing([instance(seen_ms_ago=12_345)], NOW))
    assert shown == {
        "instances": [
            {"service": "processor", "host": "node-1", "pid": 42, "consumer": "node-1-42",
             "health_url": "http://node-1:41234", "last_seen_s_ago": 12.3}
        ]
    }  # fmt: skip
