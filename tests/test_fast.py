"""`v2x run --fast`: every tier in one process, in lockstep through a real broker; deterministic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from v2x.core.scenario import LEGS
from v2x.net.broker import MosquittoBroker

SHORT = str(Path(__file__).parent / "data" / "short_four_way.toml")


def _run(tmp_path: Path, scenario: str, duration: float, *extra: str, name: str = "r.json") -> dict[str, Any]:
    report = tmp_path / name
    res = subprocess.run(
        [sys.executable, "-m", "v2x", "run", scenario, "--headless", "--fast", "--duration", f"{duration:g}",
         "--report", str(report), *extra],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(report.read_text())  # type: ignore[no-any-return]


def _check(r: dict[str, Any]) -> None:
    assert r["mode"] == "fast"
    msgs, vehicles = r["messages"], r["vehicles"]
    # vehicles enter and leave
    assert vehicles["spawned"] >= 40
    assert vehicles["finished"] >= 20
    # the cloud receives every vehicle's BSMs: all of them, from every vehicle
    assert msgs["bsm"]["sent"] > 10_000
    assert msgs["bsm"]["received_by"]["cloud"] == msgs["bsm"]["sent"]
    assert r["cloud"]["vehicles_seen"] == vehicles["spawned"]
    # SPaT reaches every approaching vehicle, by both paths
    cov = r["spat_coverage"]
    assert cov["approaching_without_spat"] == []
    assert cov["vehicles_with_spat"] == cov["vehicles_approaching"] == vehicles["spawned"]
    by_path = msgs["spat"]["received_by_vehicles_by_path"]
    assert by_path["rsu"] > 0  # fewer than by cellular: the sidelink has a range and loses more near its edge
    assert by_path["cloud"] > 0
    # every vehicle got the MAP (retained) once, on subscribing to the intersection ahead
    assert msgs["map"]["received_by"]["vehicles"] == vehicles["spawned"]
    assert r["traffic"]["collisions"] == 0
    assert r["traffic"]["red_light_violations"] == 0
    # the report counts messages sent and received per type
    for t in ("bsm", "spat", "map", "rsm", "status"):
        assert msgs[t]["sent"] > 0, t
        assert msgs[t]["received"] > 0, t
    assert r["lockstep"]["lost"] == 0
    # (not_subscribed: retained messages amqtt sends to clients that never subscribed to them, set aside)
    assert r["dropped"]["fleet"] | {"not_subscribed": 0} == {"bsm_not_connected": 0, "bsm_not_sent": 0, "transport_out": 0, "transport_in": 0, "not_subscribed": 0}


def test_four_way_120_s_fast_on_the_fixture_mosquitto(mosquitto: MosquittoBroker, tmp_path: Path, topic_prefix: str) -> None:
    plots = tmp_path / "plots"
    r = _run(tmp_path, "four_way", 120, "--broker", mosquitto.url, "--root", f"{topic_prefix}/v2x/v1", "--plots", str(plots))
    _check(r)
    assert r["lockstep"]["unexpected"] == 0
    assert r["dropped"]["fleet"]["not_subscribed"] == r["dropped"]["cloud"]["not_subscribed"] == 0  # Mosquitto sends none
    # --plots: a CDF per hop, latency over time, a time-space diagram per approach (PNGs, not empty)
    names = sorted(p.name for p in plots.glob("*.png"))
    assert names == ["latency_cdf.png", "latency_over_time.png", *(f"time_space_J1_{leg}.png" for leg in sorted(LEGS))]
    assert all((plots / n).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (plots / n).stat().st_size > 20_000 for n in names)
    # what the latency plots are drawn from: every hop's histogram, and p50/p99 for each second of the run
    for hop, lat in r["latency_ms"].items():
        assert sum(v for k, v in r["latency_hist_us"][hop].items() if k != "max") == lat["count"]
        rows = r["latency_over_time"][hop]["rows"]
        assert sum(row[1] for row in rows) == lat["count"]
    bsm_rows = r["latency_over_time"]["vehicle->cloud"]["rows"]
    assert [row[0] for row in bsm_rows] == list(range(bsm_rows[0][0], 121))  # no gap; the last BSMs at t = 120 s


def _kpis(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("messages", "vehicles", "traffic", "spat_coverage")}


def test_fast_mode_is_deterministic(mosquitto: MosquittoBroker, tmp_path: Path, topic_prefix: str) -> None:
    """Same scenario and seed: identical traffic KPIs and message counts; another seed differs."""
    root = ["--broker", mosquitto.url, "--root", f"{topic_prefix}/v2x/v1"]
    a = _run(tmp_path, SHORT, 60, *root, "--seed", "7", name="a.json")
    b = _run(tmp_path, SHORT, 60, *root, "--seed", "7", name="b.json")
    c = _run(tmp_path, SHORT, 60, *root, "--seed", "8", name="c.json")
    assert _kpis(a) == _kpis(b)
    assert _kpis(a) != _kpis(c)
    assert a["vehicles"]["finished"] > 10


def test_signed_fast_runs_are_deterministic_too(mosquitto: MosquittoBroker, tmp_path: Path, topic_prefix: str) -> None:
    """With --sign every run makes new keys, so the same message has other bytes in each; link impairment draws on the
    frame without its signature, so a seed's signed runs lose and delay the same messages (before, their sidelink
    losses differed by a few in a thousand)."""
    root = ["--broker", mosquitto.url, "--root", f"{topic_prefix}/v2x/v1", "--seed", "7", "--sign"]
    a = _run(tmp_path, SHORT, 60, *root, name="a.json")
    b = _run(tmp_path, SHORT, 60, *root, name="b.json")
    assert a["link_drops"]["fleet"]["lost"], a["link_drops"]  # the sidelink loses some: there are draws to compare
    assert (_kpis(a), a["link_drops"], a["latency_hist_us"]) == (_kpis(b), b["link_drops"], b["latency_hist_us"])
    assert a["bad_input"] == {"fleet": {}, "cloud": {}, "rsus": {}}  # every message signed and verified


def test_four_way_fast_with_every_client_on_mqtt_311(mosquitto: MosquittoBroker, tmp_path: Path, topic_prefix: str) -> None:
    r = _run(tmp_path, "four_way", 60, "--broker", mosquitto.url, "--root", f"{topic_prefix}/v2x/v1", "--mqtt", "3.1.1")
    assert r["broker"]["mqtt"] == "3.1.1"
    assert r["vehicles"]["spawned"] >= 20
    assert r["messages"]["bsm"]["received_by"]["cloud"] == r["messages"]["bsm"]["sent"] > 0
    assert r["spat_coverage"]["approaching_without_spat"] == []
    assert r["traffic"]["collisions"] == 0
    assert r["lockstep"]["lost"] == 0


def test_shared_obu_connections_give_the_same_run(mosquitto: MosquittoBroker, tmp_path: Path, topic_prefix: str) -> None:
    """#27 item 2: with the OBUs on one shared connection, the run is the same as with one connection each: the same
    traffic, the same messages sent and received by every tier (the cloud hears every BSM, every approaching vehicle
    gets SPaT on both paths and the retained MAP once), and the report says which mode ran."""
    root = ["--broker", mosquitto.url, "--root", f"{topic_prefix}/v2x/v1", "--seed", "7"]
    each = _run(tmp_path, SHORT, 60, *root, name="each.json")
    shared = _run(tmp_path, SHORT, 60, *root, "--obu-connections", "shared", name="shared.json")
    assert _kpis(shared) == _kpis(each)
    assert shared["lockstep"]["lost"] == shared["lockstep"]["unexpected"] == 0
    assert shared["lockstep"]["deliveries"] == each["lockstep"]["deliveries"]
    msgs, vehicles = shared["messages"], shared["vehicles"]
    assert msgs["bsm"]["received_by"]["cloud"] == msgs["bsm"]["sent"] > 1000
    assert shared["spat_coverage"]["approaching_without_spat"] == []
    assert msgs["spat"]["received_by_vehicles_by_path"]["rsu"] > 0
    assert msgs["spat"]["received_by_vehicles_by_path"]["cloud"] > 0
    # the retained MAP, once per vehicle (from the connection's copy for all but the first): as many as with one
    # connection each (a vehicle that entered in the last steps had not reached its intersection's filter yet)
    assert msgs["map"]["received_by"]["vehicles"] == each["messages"]["map"]["received_by"]["vehicles"] >= vehicles["spawned"] - 2
    assert shared["traffic"]["collisions"] == 0
    assert shared["connection"]["obus"].startswith("shared")
    assert each["connection"]["obus"].startswith("per-vehicle")

