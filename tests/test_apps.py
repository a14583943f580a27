"""Vehicle applications: each fires when it should (a test that fails if it never fires) and
stays quiet when it should not (a test that fails if it fires anyway)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from roadside.offline import OfflineRun
from v2x import messages as m
from v2x.apps import HLW_RANGE_M, Apps, route_points
from v2x.scenario import load, resolve

SCENARIOS = Path(__file__).parent.parent / "scenarios"


def _event_at(run: OfflineRun, iid: str, leg: str, lane: int, upstream_m: float) -> m.RoadTrafficEvent:
    _, _, x, y = run.net.lane_point(iid, leg, lane, upstream_m)
    return m.RoadTrafficEvent(
        event_id=1, kind=m.HazardKind.STALLED_VEHICLE, source=m.EventSource.DETECTION, status=m.EventStatus.ACTIVE,
        position=run.net.frame.to_geo(x, y), radius_m=10.0, lanes=(), priority=5, start_time_ms=0, end_time_ms=None,
        description="stalled vehicle",
    )


def test_hlw_warns_exactly_the_vehicles_heading_for_the_hazard_within_range() -> None:
    sc = load(resolve("hazard"))
    run = OfflineRun(sc)
    for _ in range(900):  # 90 s of traffic on every approach
        run.step()
    t = run.traffic
    assert t.n > 20
    event = _event_at(run, "J1", "north", 0, 120.0)
    apps = Apps(run.net)
    # every vehicle has heard of the hazard: only those whose path passes it, still before it, within range, are warned
    apps.step(t, {int(v): {"cloud/1": event} for v in t.ids}, {})
    target = route_points(run.net, 0, "north", 120.0)[t.route]
    should = {int(v) for v, s, tg in zip(t.ids, t.s, target, strict=True) if s < tg <= s + HLW_RANGE_M}
    warned = {w.vehicle for w in apps.warnings}
    assert should  # the test means something: some vehicles are heading for it
    assert warned == should
    assert len(should) < t.n  # ...and others (other approaches, or past it) are not
    assert all(w.app == "hlw" and w.trigger == "rsi cloud/1" for w in apps.warnings)
    apps.step(t, {int(v): {"cloud/1": event} for v in t.ids}, {})
    assert len(apps.warnings) == len(should)  # once per vehicle and hazard


def test_route_points_are_nan_off_the_approach() -> None:
    run = OfflineRun(load(resolve("four_way")))
    pts = route_points(run.net, 0, "north", 50.0)
    assert np.isfinite(pts).any()
    assert np.isnan(pts).any()
    for r in np.flatnonzero(np.isfinite(pts)):
        first = run.net.links[int(run.net.route_links[r, 0])]
        assert first.leg == "north"
        assert math.isclose(pts[r], run.net.link_length[run.net.route_links[r, 0]] - 50.0)


@pytest.mark.v2x_scenario("hazard", duration=200, fast=True)
def test_hazard_every_vehicle_that_reached_it_was_warned_first(v2x_report: Any) -> None:
    (h,) = v2x_report["events"]["hazard_warning_ms"]["per_hazard"]
    assert h["reached"] >= 10
    assert h["reached_unwarned"] == 0
    assert h["affected"] >= 1
    assert h["affected_warned"] == h["affected"]
    assert 0 < v2x_report["events"]["hazard_warning_ms"]["first"] <= v2x_report["events"]["hazard_warning_ms"]["last"] < 1000
    hlw = v2x_report["apps"]["hlw"]
    assert hlw["warnings"] == hlw["vehicles"] >= h["reached"]
    assert hlw["lead_time_s_p50"] >= 5.0
    assert v2x_report["apps"]["rlvw"]["warnings"] == 0  # timely SPaT, followed by its countdown: nobody runs a red
    assert v2x_report["traffic"]["red_light_violations"] == 0


@pytest.mark.v2x_scenario(
    "four_way", "--set", "links.sidelink.latency_ms=1000", "--set", "links.cellular.latency_ms=1000",
    "--set", "fleet.spat_countdown=false", "--set", "fleet.spat_stale_s=2", duration=200, fast=True,
)
def test_rlvw_warns_the_vehicles_that_late_spat_sends_through_red(v2x_report: Any) -> None:
    violations = v2x_report["traffic"]["red_light_violations"]
    rlvw = v2x_report["apps"]["rlvw"]
    assert violations >= 1  # drivers reading 1 s-old SPaT without its countdown, reacting after 1 s
    assert rlvw["warnings"] >= violations
    assert 0 < rlvw["lead_time_s_min"] <= rlvw["lead_time_s_p50"]
    assert all(e["trigger"].startswith("spat J1") for e in v2x_report["app_events"]["listed"] if e["app"] == "rlvw")
    assert v2x_report["apps"]["hlw"]["warnings"] == 0  # no hazard in this scenario


def test_time_to_green_is_the_reds_likely_end_and_none_otherwise() -> None:
    from roadside.plans import controllers
    from roadside.spat import intersection_state
    from v2x.apps import time_to_green, time_to_red
    from v2x.belief import SignalBelief
    from v2x.network import Network

    net = Network(load(resolve("four_way")))
    ctl = controllers(net)[0]
    belief = SignalBelief(stale_s=1.0)
    belief.receive(intersection_state(net, 0, ctl, 0), 0.0, "rsu")
    states = {mv.signal_group: mv.events[0].state for mv in belief.latest[1].state.states}
    green = next(g for g, st in states.items() if st is m.LightState.PROTECTED_GREEN)
    red = next(g for g, st in states.items() if st is m.LightState.RED)
    assert time_to_green(belief, 1, green, 0.5) is None  # green already: no advice
    assert time_to_red(belief, 1, green, 0.5) is None  # not yet yellow: RLVW has nothing to say
    # the other phase's red lasts the first phase's green, yellow and all-red (30 + 3 + 2 s)
    assert time_to_green(belief, 1, red, 0.5) == pytest.approx(34.5)
    assert time_to_red(belief, 1, red, 0.5) == 0.0
    assert time_to_green(belief, 1, red, 2.0) is None  # stale SPaT: nothing to advise on


def test_glosa_advises_only_when_on_and_then_fewer_vehicles_stop(v2x_run: Any) -> None:
    off = v2x_run("corridor", "--set", "fleet.glosa=false", duration=150)
    on = v2x_run("corridor", "--set", "fleet.glosa=true", duration=150)  # the same seed: the same arrivals
    assert "glosa" not in off["apps"]
    assert not [e for e in off["app_events"]["listed"] if e["app"] == "glosa"]
    g = on["apps"]["glosa"]
    assert g["warnings"] >= 20
    assert all(e["trigger"].startswith("spat J") for e in on["app_events"]["listed"] if e["app"] == "glosa")
    assert on.traffic["collisions"] == 0
    assert on.traffic["red_light_violations"] == 0
    assert on.traffic["stops_per_vehicle"] < 0.85 * off.traffic["stops_per_vehicle"]
