"""The console's pure shaping: presence, filters, formatting, the chart's
series, the device model and frames as stored."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from adapters.api_models import ChargePointSummary, MeterValue
from adapters.console import views as v

NOW = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def test_presence_reads_last_seen_against_the_offline_threshold() -> None:
    assert v.presence(None, None, NOW) == "never"
    assert v.presence(at(100), at(5), NOW) == "online"
    assert v.presence(at(100), at(v.OFFLINE_AFTER_S + 1), NOW) == "offline"
    assert v.presence(at(100), "garbage", NOW) == "offline"
    assert v.presence(at(100), at(100), NOW, offline_after_s=60) == "offline"
    # The threshold set for the request (mount.py) is the default.
    token = v.offline_after.set(60)
    try:
        assert v.presence(at(100), at(100), NOW) == "offline"
        assert v.presence(at(100), at(100), NOW, offline_after_s=120) == "online"
    finally:
        v.offline_after.reset(token)


def test_online_legend() -> None:
    assert v.online_legend(v.OFFLINE_AFTER_S) == "heard from in the last 11 min"
    assert v.online_legend(90) == "heard from in the last 90 s"


def row(
    cp: str, seen: float | None, protocol: str | None = None, vendor: str = "V"
) -> v.ChargerRow:
    s = ChargePointSummary(charge_point_id=cp, charge_point_vendor=vendor, last_boot=at(9999),
                           last_seen=at(seen) if seen is not None else None)  # fmt: skip
    return v.charger_row(s, protocol, "1.2", ["Available", None, "Available"], NOW)


def test_charger_filters() -> None:
    rows = [row("CP-1", 10), row("CP-2", 5000, "ocpp2.0.1", vendor="Acme"), row("XY-3", 90000)]
    ids = lambda f: [r.charge_point_id for r in v.filter_chargers(rows, f, NOW)]  # noqa: E731
    assert ids(v.ChargerFilter()) == ["CP-1", "CP-2", "XY-3"]
    assert ids(v.ChargerFilter(q="acme")) == ["CP-2"]
    assert ids(v.ChargerFilter(q="cp-")) == ["CP-1", "CP-2"]
    assert ids(v.ChargerFilter(presence="offline")) == ["CP-2", "XY-3"]
    assert ids(v.ChargerFilter(protocol="ocpp1.6")) == ["CP-1", "XY-3"]
    assert ids(v.ChargerFilter(seen="5m")) == ["CP-1"]
    assert ids(v.ChargerFilter(seen="old")) == ["XY-3"]
    assert rows[0].connectors == [("Available", 2), ("Unknown", 1)]
    assert v.ChargerFilter(q="a b", seen="1h").query() == "q=a+b&seen=1h"


def test_the_charger_list_shows_the_first_rows_of_all_that_match() -> None:
    rows = [row(f"CP-{n}", 10) for n in range(5)] + [row("XY-9", 10)]
    page = v.charger_page(rows, v.ChargerFilter(), NOW, limit=3)
    assert [r.charge_point_id for r in page.rows] == ["CP-0", "CP-1", "CP-2"]
    assert (page.matched, page.total, page.capped) == (6, 6, True)
    # The filters see past the cap.
    page = v.charger_page(rows, v.ChargerFilter(q="xy"), NOW, limit=3)
    assert [r.charge_point_id for r in page.rows] == ["XY-9"]
    assert (page.matched, page.total, page.capped) == (1, 6, False)
    assert v.charger_page(rows, v.ChargerFilter(), NOW).matched == 6
    assert not v.charger_page(rows, v.ChargerFilter(), NOW).capped


def test_dom_ids_are_one_to_one_and_safe() -> None:
    assert v.dom_id("CP-01") == "CP-01"
    ids = [v.dom_id(t) for t in ("a b", "a_20_b", "a.b", "a_b", "é", 'x"y')]
    assert ids == ["a_20_b", "a_5f_20_5f_b", "a_2e_b", "a_5f_b", "_e9_", "x_22_y"]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids)


def test_merge_counts_adds_up_per_status() -> None:
    assert v.merge_counts([[("Available", 2)], [("Charging", 1), ("Available", 1)]]) == [
        ("Available", 3), ("Charging", 1)]  # fmt: skip


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(12, "12 s ago"), (125, "2 min ago"), (7300, "2 h ago"), (200000, "2 d ago"), (-4, "in 4 s")],
)
def test_ago(seconds: float, text: str) -> None:
    assert v.ago(at(seconds), NOW) == text


def test_formats() -> None:
    assert v.ago(None, NOW) == "never"
    assert v.kwh(12345) == "12.345 kWh" and v.kwh(None) == "—" and v.kwh(-5) == "-0.005 kWh"
    assert v.duration(at(3725), at(0)) == "1 h 02 min"
    assert v.duration(at(250), None, NOW) == "4 min 10 s"
    assert v.duration(None, None) == "—"
    assert v.when("2024-01-01T12:00:05.000000Z") == "2024-01-01 12:00:05 UTC"
    assert v.stream_time("1704110400000-0") == "2024-01-01T12:00:00.000000Z"
    assert v.protocol_label("ocpp2.0.1") == "OCPP 2.0.1" and v.protocol_label(None) == "OCPP 1.6"


def mv(seconds: int, value: str, measurand: str | None = None, unit: str | None = None,
       **more: str) -> MeterValue:  # fmt: skip
    return MeterValue(sampled_at=at(-seconds), connector_id=1, value=value, measurand=measurand,
                      unit=unit, **more)  # fmt: skip


def test_chart_aligns_energy_and_power_and_skips_phases_and_signed_data() -> None:
    values = [
        mv(0, "1000"),  # Energy.Active.Import.Register in Wh by default
        mv(0, "7.4", "Power.Active.Import", "kW"),
        mv(60, "1.2", "Energy.Active.Import.Register", "kWh"),
        mv(60, "230", "Voltage", "V"),
        mv(60, "3", "Power.Active.Import", "kW", phase="L1"),
        mv(120, "1400", format="SignedData"),
        mv(120, "not a number"),
    ]
    chart = v.chart_data(values)
    assert chart.t == [NOW.timestamp(), NOW.timestamp() + 60]
    assert chart.energy_kwh == [0.0, 0.2]
    assert chart.power_kw == [7.4, None]
    assert not chart.power_derived and chart.delivered_kwh == 0.2
    assert [s.value for s in v.signed_values(values)] == ["1400"]


def test_energy_so_far_counts_from_the_meter_start_when_known() -> None:
    # meterStart 1522 Wh; the first reading comes later, at 1774 Wh.
    values = [mv(60, "1774"), mv(120, "2026")]
    chart = v.chart_data(values, meter_start_wh=1522)
    assert chart.energy_kwh == [0.252, 0.504] and chart.delivered_kwh == 0.504
    assert chart.from_meter_start
    unknown = v.chart_data(values)
    assert unknown.energy_kwh == [0.0, 0.252] and not unknown.from_meter_start


def test_chart_derives_power_when_the_charger_sent_none() -> None:
    chart = v.chart_data([mv(0, "0"), mv(3600, "7400"), mv(7200, "7400")])
    assert chart.power_derived
    assert chart.power_kw == [None, 7.4, 0.0]
    assert v.chart_data([]).points == 0


def test_rate_meter() -> None:
    meter = v.RateMeter(window_s=10)
    assert meter.add(0.0, 100) is None
    assert meter.add(0.5, 150) is None  # under a second apart
    assert meter.add(2.0, 300) == 100.0
    assert meter.add(30.0, 3100) == 100.0  # only the last window counts
    assert meter.add(31.0, 5) is None  # the stream was recreated


def test_variable_rows_from_the_device_model_hashes() -> None:
    field = msgspec.json.encode(["Connector", "", 1, 1, "ConnectorType", "", "Actual"]).decode()
    hb = msgspec.json.encode(["OCPPCommCtrlr", "", None, None, "HeartbeatInterval", "", "Actual"])
    meta = {hb.decode(): '{"mutability": "ReadWrite", "characteristics": {"unit": "s"}}'}
    rows = v.variable_rows({field: "cType2", hb.decode(): "300", "not json": "x"}, meta)
    assert [(r.component, r.evse, r.variable, r.value, r.mutability, r.unit) for r in rows] == [
        ("Connector", "1/1", "ConnectorType", "cType2", None, None),
        ("OCPPCommCtrlr", "", "HeartbeatInterval", "300", "ReadWrite", "s"),
    ]


def test_frames_are_named_by_their_message() -> None:
    assert v.frame_action('[2,"1","Heartbeat",{}]') == "Heartbeat"
    assert v.frame_action('[3,"1",{}]') == "CALLRESULT"
    assert v.frame_action('[4,"1","NotImplemented","",{}]') == "CALLERROR"
    assert v.frame_action("garbage") == "?" and v.frame_action("{}") == "?"


def test_transaction_filter() -> None:
    f = v.TransactionFilter(charge_point_id="CP-1", state="finished", start_day="2024-01-01",
                            end_day="2024-01-31")  # fmt: skip
    assert f.active is False
    assert f.started_from == datetime(2024, 1, 1, tzinfo=UTC)
    assert f.started_to == datetime(2024, 2, 1, tzinfo=UTC)
    assert f.query(before=5) == (
        "charge_point_id=CP-1&state=finished&start_day=2024-01-01&end_day=2024-01-31&before=5"
    )
    with pytest.raises(ValueError):
        v.TransactionFilter(start_day="01/02/2024").started_from  # noqa: B018
    assert v.TransactionFilter(end_day="2999-12-31").started_to == datetime(3000, 1, 1, tzinfo=UTC)
    for day in ("9999-12-31", "1999-12-31", "0001-01-01"):
        with pytest.raises(ValueError):
            v.TransactionFilter(end_day=day).started_to  # noqa: B018
